"""Sales orders as orderflow sees them, whatever channel they came from."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, Field, model_validator

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.money import CurrencyCode, Money, total
from orderflow.canonical.party import Address, Customer


class Channel(StrEnum):
    """Where an order was sold."""

    SHOPIFY = "shopify"
    AMAZON = "amazon"


class FinancialStatus(StrEnum):
    """Whether the channel has collected the money for an order."""

    PENDING = "pending"
    AUTHORIZED = "authorized"
    PAID = "paid"
    PARTIALLY_PAID = "partially_paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    VOIDED = "voided"


class Discount(CanonicalModel):
    """A discount, at order level or allocated to a line."""

    title: str = "discount"
    code: str | None = None
    amount: Money


class TaxLine(CanonicalModel):
    """A tax charged on a line or on shipping."""

    title: NonEmptyStr
    rate: Decimal = Field(ge=0)
    amount: Money


class ShippingCharge(CanonicalModel):
    """What the buyer paid for shipping, and the service they chose."""

    title: NonEmptyStr
    code: str | None = None
    amount: Money
    discounts: list[Discount] = []
    tax_lines: list[TaxLine] = []


class OrderLine(CanonicalModel):
    """One SKU on an order, with its quantity, price, discounts and taxes."""

    line_id: NonEmptyStr
    sku: Sku
    name: str = ""
    quantity: int = Field(gt=0)
    unit_price: Money
    discounts: list[Discount] = []
    tax_lines: list[TaxLine] = []
    requires_shipping: bool = True

    @property
    def gross(self) -> Money:
        """Quantity times unit price, before discounts and tax."""
        return self.unit_price * self.quantity

    @property
    def discount_total(self) -> Money:
        """The discounts allocated to this line."""
        return total([d.amount for d in self.discounts], self.unit_price.currency)

    @property
    def tax_total(self) -> Money:
        """The taxes charged on this line."""
        return total([t.amount for t in self.tax_lines], self.unit_price.currency)

    @property
    def net(self) -> Money:
        """What the line sells for after its discounts, before tax."""
        return self.gross - self.discount_total


class Order(CanonicalModel):
    """A sales order accepted from a channel, in one currency."""

    channel: Channel
    channel_order_id: NonEmptyStr
    order_number: NonEmptyStr
    placed_at: AwareDatetime
    currency: CurrencyCode
    customer: Customer
    ship_to: Address
    bill_to: Address | None = None
    lines: list[OrderLine] = Field(min_length=1)
    shipping: list[ShippingCharge] = []
    discounts: list[Discount] = Field(default=[], description="Order-level discounts not allocated to lines")
    tax_lines: list[TaxLine] = Field(default=[], description="Order-level taxes as the channel reports them")
    total: Money
    financial_status: FinancialStatus = FinancialStatus.PAID
    ship_method: str | None = None
    location_id: str | None = Field(default=None, description="The channel's fulfillment location, if chosen")
    note: str | None = None

    @model_validator(mode="after")
    def _one_currency(self) -> Order:
        monies: list[tuple[str, Money]] = [("total", self.total)]
        for i, line in enumerate(self.lines):
            monies.append((f"lines.{i}.unit_price", line.unit_price))
            monies += [(f"lines.{i}.discounts", d.amount) for d in line.discounts]
            monies += [(f"lines.{i}.tax_lines", t.amount) for t in line.tax_lines]
        for i, charge in enumerate(self.shipping):
            monies.append((f"shipping.{i}.amount", charge.amount))
        monies += [("discounts", d.amount) for d in self.discounts]
        monies += [("tax_lines", t.amount) for t in self.tax_lines]
        for where, money in monies:
            if money.currency != self.currency:
                raise ValueError(f"{where} is in {money.currency} but the order is in {self.currency}")
        return self

    @property
    def key(self) -> str:
        """The business key, which is also the saga's workflow ID."""
        return order_key(self.channel, self.channel_order_id)

    @property
    def subtotal(self) -> Money:
        """Sum of line nets, after line discounts, before shipping and tax."""
        return total([line.net for line in self.lines], self.currency)

    @property
    def shipping_total(self) -> Money:
        """What the buyer paid for shipping, after shipping discounts."""
        return total(
            [c.amount - total([d.amount for d in c.discounts], self.currency) for c in self.shipping],
            self.currency,
        )

    @property
    def tax_total(self) -> Money:
        """All tax on the order: line and shipping taxes, or the order-level lines if that is all we have."""
        line_taxes = [t.amount for line in self.lines for t in line.tax_lines]
        line_taxes += [t.amount for c in self.shipping for t in c.tax_lines]
        if line_taxes:
            return total(line_taxes, self.currency)
        return total([t.amount for t in self.tax_lines], self.currency)

    def quantity_of(self, sku: str) -> int:
        """How many units of a SKU the order asks for, across lines."""
        return sum(line.quantity for line in self.lines if line.sku == sku)


def order_key(channel: Channel | str, channel_order_id: str) -> str:
    """The workflow ID of an order's saga: `order:{channel}:{channel_order_id}`."""
    return f"order:{Channel(channel).value}:{channel_order_id}"
