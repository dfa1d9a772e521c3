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


class ReturnReceiptLine(CanonicalModel):
    """Units of one SKU the warehouse took in, and the condition it found them in."""

    sku: Sku
    quantity: int = Field(gt=0)
    condition: ItemCondition


class ReturnReceipt(CanonicalModel):
    """One receipt of returned goods at the warehouse; `receipt_id` is its dedupe key."""

    wms_return_id: NonEmptyStr
    reference: NonEmptyStr
    receipt_id: NonEmptyStr
    lines: list[ReturnReceiptLine] = Field(min_length=1)
    received_at: AwareDatetime

    def quantities(self, condition: ItemCondition | None = None) -> dict[str, int]:
        """Units received per SKU, of one condition or of all."""
        result: dict[str, int] = {}
        for line in self.lines:
            if condition is None or line.condition is condition:
                result[line.sku] = result.get(line.sku, 0) + line.quantity
        return result

    @property
    def sellable(self) -> dict[str, int]:
        """Units per SKU that can go back on the shelf."""
        return self.quantities(ItemCondition.SELLABLE)

    @property
    def damaged(self) -> dict[str, int]:
        """Units per SKU that cannot be sold again."""
        return self.quantities(ItemCondition.DAMAGED)


class WmsReturn(CanonicalModel):
    """A return order at the warehouse: what is expected back, under which reference and tracking."""

    wms_return_id: NonEmptyStr
    reference: NonEmptyStr
    status: str
    tracking_number: str | None = None
    lines: list[ReturnLine] = []
    warehouse_id: str | None = None
