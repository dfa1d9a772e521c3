"""The base every canonical model shares: immutable, strict about unknown fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints


class CanonicalModel(BaseModel):
    """A value in orderflow's own vocabulary, the only shape workflows ever see."""

    # Frozen: a workflow's inputs are history, and history does not change. Forbidding extra
    # fields makes a vendor field that leaked past its adapter a loud error, not silent data.
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


NonEmptyStr = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]

# A stock-keeping unit as the channel and the warehouse know it. Letters, digits and the
# separators SKUs use in practice; an empty SKU (Shopify custom items) is not a SKU.
Sku = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/ ]*$"),
]


# An ISO 3166-1 alpha-2 country code.
def upper_code(value: Any) -> Any:
    """Codes (currency, country) are compared in upper case."""
    return value.strip().upper() if isinstance(value, str) else value


CountryCode = Annotated[str, BeforeValidator(upper_code), StringConstraints(pattern=r"^[A-Z]{2}$")]

# Deliberately loose: channels hand us addresses that strict validators reject (test domains,
# plus-addressing, internal hosts), and refusing an order over an email format loses a sale.
EmailAddress = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
