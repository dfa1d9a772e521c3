"""Money: an exact decimal amount in one ISO 4217 currency."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, field_validator

from orderflow.canonical.base import CanonicalModel, upper_code

CurrencyCode = Annotated[str, BeforeValidator(upper_code), StringConstraints(pattern=r"^[A-Z]{3}$")]

# Minor units differ by currency; two is the default. The ones listed are those a distributor's
# channels are likely to hand us that are not two.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3}


class CurrencyMismatchError(ValueError):
    """Raised when arithmetic mixes two currencies; converting is never implicit."""


class Money(CanonicalModel):
    """An amount of one currency. Arithmetic refuses to mix currencies."""

    amount: Decimal = Field(allow_inf_nan=False)
    currency: CurrencyCode

    @field_validator("amount", mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        # A float has already lost the cents; accept only exact inputs.
        if isinstance(value, float):
            raise ValueError("money amounts must be exact: pass a string or Decimal, not a float")
        return value

    @classmethod
    def zero(cls, currency: str) -> Money:
        """No money, in the given currency."""
        return cls(amount=Decimal(0), currency=currency)

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        """Money from a decimal string, an integer or a Decimal."""
        return cls(amount=Decimal(amount), currency=currency)

    @property
    def minor_units(self) -> int:
        """How many decimal places the currency has."""
        return _MINOR_UNITS.get(self.currency, 2)

    def rounded(self) -> Money:
        """This amount rounded to the currency's minor unit (banker's rounding, as ERPs do)."""
        exponent = Decimal(1).scaleb(-self.minor_units)
        return Money(amount=self.amount.quantize(exponent, rounding=ROUND_HALF_EVEN), currency=self.currency)

    def _same_currency(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot combine {self.currency} with {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        other = self._same_currency(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        other = self._same_currency(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __mul__(self, factor: int | Decimal) -> Money:
        if isinstance(factor, float) or not isinstance(factor, int | Decimal):
            raise TypeError("money can only be multiplied by an int or a Decimal")
        return Money(amount=self.amount * factor, currency=self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount < self._same_currency(other).amount

    def __le__(self, other: Money) -> bool:
        return self.amount <= self._same_currency(other).amount

    def __gt__(self, other: Money) -> bool:
        return self.amount > self._same_currency(other).amount

    def __ge__(self, other: Money) -> bool:
        return self.amount >= self._same_currency(other).amount

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


def total(amounts: list[Money], currency: str) -> Money:
    """The sum of amounts in one currency (zero for none)."""
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result
