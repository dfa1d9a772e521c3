"""Parties to an order: addresses and customers."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from orderflow.canonical.base import CanonicalModel, CountryCode, EmailAddress, NonEmptyStr
from orderflow.canonical.money import Money


class Address(CanonicalModel):
    """A postal address a parcel can be delivered to or sent from."""

    name: NonEmptyStr
    company: str | None = None
    line1: NonEmptyStr
    line2: str | None = None
    city: NonEmptyStr
    region: str | None = Field(default=None, description="State or province code, e.g. TX")
    postal_code: str | None = None
    country: CountryCode
    phone: str | None = None
    email: EmailAddress | None = None


class PaymentTerms(StrEnum):
    """How a customer pays: up front on the channel, or on account with a credit limit."""

    PREPAID = "prepaid"
    TERMS = "terms"


class Customer(CanonicalModel):
    """A buyer, as the channel knows them and, once matched, as the ERP knows them."""

    channel_customer_id: str | None = None
    erp_customer_id: str | None = None
    name: NonEmptyStr
    email: EmailAddress | None = None
    terms: PaymentTerms = PaymentTerms.PREPAID
    terms_days: int | None = Field(default=None, ge=0)
    credit_limit: Money | None = None

    @model_validator(mode="after")
    def _terms_need_a_limit(self) -> Customer:
        if self.terms is PaymentTerms.TERMS and self.credit_limit is None:
            raise ValueError("credit_limit is required for a terms customer")
        return self


class CreditStanding(CanonicalModel):
    """A terms customer's position in the ERP: limit, what they owe and what is on order."""

    erp_customer_id: str
    credit_limit: Money
    balance: Money
    overdue_balance: Money
    unbilled_orders: Money
    on_credit_hold: bool = False

    @property
    def available(self) -> Money:
        """Credit left for new orders: limit minus balance minus open (unbilled) orders."""
        return self.credit_limit - self.balance - self.unbilled_orders
