"""Returns and refunds."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.money import Money
from orderflow.canonical.order import Channel


class ItemCondition(StrEnum):
    """What the warehouse found when it opened the box."""

    SELLABLE = "sellable"
    DAMAGED = "damaged"


class ReturnLine(CanonicalModel):
    """Units of one SKU the customer is sending back, and why."""

    sku: Sku
    quantity: int = Field(gt=0)
    reason: str | None = None
    condition: ItemCondition | None = None


class Return(CanonicalModel):
    """A customer's request to send goods back against an order."""

    channel: Channel
    return_id: NonEmptyStr
    order_key: NonEmptyStr
    lines: list[ReturnLine] = Field(min_length=1)
    requested_at: AwareDatetime

    @property
    def key(self) -> str:
        """The saga's workflow ID: `return:{channel}:{return_id}`."""
        return f"return:{self.channel.value}:{self.return_id}"


class RefundLine(CanonicalModel):
    """Money going back for units of one order line."""

    line_id: NonEmptyStr
    sku: Sku
    quantity: int = Field(ge=0)
    amount: Money
    restock: bool = False


class Refund(CanonicalModel):
    """Money returned to the buyer on the channel."""

    order_key: NonEmptyStr
    lines: list[RefundLine] = []
    shipping: Money | None = None
    total: Money
    reason: str | None = None
    note: str | None = None


class ChannelRefundRef(CanonicalModel):
    """A refund as the channel recorded it."""

    channel_refund_id: str
    amount: Money
