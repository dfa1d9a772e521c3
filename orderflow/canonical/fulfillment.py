"""Stock, allocation, fulfillment orders, labels and shipments."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.money import Money
from orderflow.canonical.party import Address


class StockLevel(CanonicalModel):
    """What a warehouse holds of one SKU: on hand, committed to orders, free to sell, inbound."""

    sku: Sku
    warehouse_id: str
    on_hand: int = Field(ge=0)
    committed: int = Field(ge=0)
    fulfillable: int = Field(ge=0)
    awaiting: int = Field(default=0, ge=0)


class AllocationStatus(StrEnum):
    """The outcome of reserving stock for an order."""

    ALLOCATED = "allocated"
    PARTIAL = "partial"
    BACKORDERED = "backordered"


class AllocationLine(CanonicalModel):
    """Stock reserved for one SKU in one warehouse."""

    sku: Sku
    warehouse_id: str
    quantity_requested: int = Field(gt=0)
    quantity_allocated: int = Field(ge=0)

    @property
    def shortfall(self) -> int:
        """Units that could not be reserved."""
        return self.quantity_requested - self.quantity_allocated


class Allocation(CanonicalModel):
    """An order's reservation of stock: a business outcome, not an error, even when short."""

    order_key: NonEmptyStr
    lines: list[AllocationLine]
    status: AllocationStatus


class FulfillmentStatus(StrEnum):
    """Where a fulfillment order is in the warehouse."""

    PROCESSING = "processing"
    EXCEPTION = "exception"
    ON_HOLD = "on_hold"
    PARTIALLY_FULFILLED = "partially_fulfilled"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


class FulfillmentLine(CanonicalModel):
    """A SKU and quantity the warehouse is asked to pick, pack and ship."""

    sku: Sku
    quantity: int = Field(gt=0)
    name: str = ""
    unit_price: Money | None = None


class FulfillmentOrderRequest(CanonicalModel):
    """What orderflow asks the warehouse to ship; `reference` makes the create idempotent."""

    reference: NonEmptyStr
    order_number: NonEmptyStr
    ship_to: Address
    ship_method: NonEmptyStr
    lines: list[FulfillmentLine] = Field(min_length=1)
    warehouse_id: str | None = None
    channel: str | None = None
    placed_at: AwareDatetime | None = None


class FulfillmentOrder(CanonicalModel):
    """A fulfillment order as the warehouse holds it."""

    wms_order_id: str
    reference: str
    status: FulfillmentStatus
    lines: list[FulfillmentLine]
    warehouse_ids: list[str] = []
    shipment_ids: list[str] = []
    exception_reason: str | None = None


class CancellationOutcome(StrEnum):
    """What the warehouse managed to cancel."""

    CANCELLED = "cancelled"
    PARTIAL = "partial"
    REFUSED = "refused"


class FulfillmentCancellation(CanonicalModel):
    """The result of cancelling a fulfillment order: refused once a label exists."""

    wms_order_id: str
    outcome: CancellationOutcome
    reason: str | None = None


class Parcel(CanonicalModel):
    """A box to ship: inches and ounces, as US carriers rate them."""

    length_in: Decimal = Field(gt=0)
    width_in: Decimal = Field(gt=0)
    height_in: Decimal = Field(gt=0)
    weight_oz: Decimal = Field(gt=0)


class Rate(CanonicalModel):
    """A carrier's price for a service on a shipment."""

    rate_id: str
    carrier: str
    service: str
    amount: Money
    delivery_days: int | None = None


class ShipmentQuote(CanonicalModel):
    """A carrier shipment that has been rated but not bought."""

    carrier_shipment_id: str
    reference: str | None = None
    rates: list[Rate]
    is_return: bool = False


class RefundStatus(StrEnum):
    """Where a label's void or refund is with the carrier."""

    NONE = "none"
    SUBMITTED = "submitted"
    REFUNDED = "refunded"
    REJECTED = "rejected"
    NOT_APPLICABLE = "not_applicable"


class Label(CanonicalModel):
    """A bought shipping label with its tracking."""

    carrier_shipment_id: str
    reference: str | None = None
    rate: Rate
    tracking_number: str
    label_url: str
    tracker_id: str | None = None
    tracking_url: str | None = None
    is_return: bool = False
    refund_status: RefundStatus = RefundStatus.NONE


class TrackingStatus(StrEnum):
    """A parcel's journey, in the carrier aggregator's words."""

    UNKNOWN = "unknown"
    PRE_TRANSIT = "pre_transit"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    RETURN_TO_SENDER = "return_to_sender"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    ERROR = "error"


class Tracker(CanonicalModel):
    """A carrier tracker following one tracking number."""

    tracker_id: str
    tracking_number: str
    carrier: str
    status: TrackingStatus
    public_url: str | None = None
    carrier_shipment_id: str | None = None
    signed_by: str | None = None
    updated_at: AwareDatetime | None = None


class Tracking(CanonicalModel):
    """The tracking a shipment went out with."""

    carrier: NonEmptyStr
    number: NonEmptyStr
    url: str | None = None
    service: str | None = None


class ShipmentLine(CanonicalModel):
    """Units of one SKU that left the warehouse in a shipment."""

    sku: Sku
    quantity: int = Field(gt=0)


class Shipment(CanonicalModel):
    """A parcel (or set of parcels) that left a warehouse for an order."""

    shipment_id: NonEmptyStr
    wms_order_id: str | None = None
    reference: str | None = None
    warehouse_id: str | None = None
    tracking: Tracking
    lines: list[ShipmentLine] = Field(min_length=1)
    shipped_at: AwareDatetime
