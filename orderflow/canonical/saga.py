"""The order-to-cash saga's contract: its status, its messages, and every activity's input and result.

This module is to the saga what `api.go` is to a service in Temporal's reference app: the names
and shapes that the workflow, the activities, the webhook service and the CLI agree on. Nothing
here does I/O, so workflow code can import it freely.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.erp import ErpDocumentRef, Invoice, SalesOrder, SalesOrderRef
from orderflow.canonical.fulfillment import (
    Allocation,
    CancellationOutcome,
    FulfillmentOrder,
    Label,
    Parcel,
    RefundStatus,
    Shipment,
)
from orderflow.canonical.money import Money
from orderflow.canonical.order import Order
from orderflow.canonical.party import Address, CreditStanding, PaymentTerms

TASK_QUEUE = "orderflow"

# Signal and update names, shared by the workflow, the webhook service, the CLI and the Temporal UI.
SIGNAL_CANCEL = "cancel"
SIGNAL_APPROVE_CREDIT = "approve_credit"
SIGNAL_RETRY = "retry"
SIGNAL_SKIP = "skip"
SIGNAL_SHIPMENT_CONFIRMED = "shipment_confirmed"
SIGNAL_STOCK_AVAILABLE = "stock_available"
SIGNAL_DELIVERY_RECORDED = "delivery_recorded"
# Updates answer the caller with accepted-or-refused-and-why, which a signal cannot.
UPDATE_CANCEL = "request_cancel"
UPDATE_APPROVE_CREDIT = "request_credit_approval"
UPDATE_RETRY = "request_retry"
UPDATE_SKIP = "request_skip"
QUERY_STATUS = "status"
# The step name of an operator's retry or skip in `steps_done`, whose detail says who chose it and why.
OPERATOR_RECORD = "operator"


class OrderStatus(StrEnum):
    """Where an order is in its journey; the `OrderStatus` search attribute holds this."""

    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    CREDIT_HOLD = "CREDIT_HOLD"
    CREDIT_APPROVED = "CREDIT_APPROVED"
    BACKORDERED = "BACKORDERED"
    ALLOCATED = "ALLOCATED"
    POSTED = "POSTED"
    LABELLED = "LABELLED"
    RELEASED = "RELEASED"
    PARTIALLY_SHIPPED = "PARTIALLY_SHIPPED"
    SHIPPED = "SHIPPED"
    FULFILLED = "FULFILLED"
    COMPLETED = "COMPLETED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


class SagaStep(StrEnum):
    """The steps of order to cash, in order (DESIGN.md §4)."""

    ACCEPT = "accept"
    CREDIT_CHECK = "credit_check"
    ALLOCATE = "allocate"
    POST_TO_ERP = "post_to_erp"
    BUY_LABEL = "buy_label"
    RELEASE = "release"
    AWAIT_SHIPMENT = "await_shipment"
    CONFIRM = "confirm"
    INVOICE = "invoice"
    # Not in the happy path: a cancel of a partly shipped order cancels what has not shipped, in
    # the warehouse and the ERP, and the order goes on to confirm and invoice what did ship.
    CANCEL_UNSHIPPED = "cancel_unshipped"


class CompensationStep(StrEnum):
    """The undo of each step that changes another system."""

    RELEASE_ALLOCATION = "release_allocation"
    CLOSE_SALES_ORDER = "close_sales_order"
    VOID_LABEL = "void_label"
    CANCEL_FULFILLMENT_ORDER = "cancel_fulfillment_order"
    CANCEL_ON_CHANNEL = "cancel_on_channel"


class CancelSource(StrEnum):
    """Who asked for a cancellation: the channel already knows, an operator's must be told to it."""

    CHANNEL = "channel"
    OPERATOR = "operator"
    DEADLINE = "deadline"
    # The buyer asked the channel, which leaves the decision to the seller (Amazon's buyer
    # cancellation request): the order is still open there, so the saga cancels it there too.
    BUYER = "buyer"


# ---------------------------------------------------------------------------------------------
# The workflow's input, result, messages and query answer
# ---------------------------------------------------------------------------------------------


class SagaTimeouts(CanonicalModel):
    """The saga's business deadlines; durable timers, so they survive restarts."""

    credit_hold: timedelta = timedelta(hours=48)
    backorder: timedelta = timedelta(days=7)
    backorder_recheck: timedelta = timedelta(hours=1)
    shipment_sla: timedelta = timedelta(hours=72)


class OrderToCashInput(CanonicalModel):
    """Start an order's saga: the canonical order, accepted from its channel, and its deadlines."""

    order: Order
    timeouts: SagaTimeouts = SagaTimeouts()
    received_at_epoch_ms: int | None = Field(
        default=None, description="When the channel's webhook arrived, for webhook-to-ERP latency"
    )


class CancelRequest(CanonicalModel):
    """A request to cancel an order: all of it before it ships, what has not shipped once part has."""

    reason: NonEmptyStr
    source: CancelSource = CancelSource.OPERATOR
    requested_by: str | None = None


class CreditApproval(CanonicalModel):
    """An operator's release of an order from credit hold."""

    approved_by: NonEmptyStr
    note: str | None = None


class OperatorCommand(CanonicalModel):
    """An operator's retry or skip of a parked step, after fixing what parked it."""

    requested_by: NonEmptyStr
    note: str | None = None


class ShipmentConfirmed(CanonicalModel):
    """The warehouse says a parcel left, with these lines and this tracking."""

    shipment: Shipment


class StockAvailable(CanonicalModel):
    """Stock arrived that a backordered order may be waiting for."""

    skus: list[Sku] = []


class DeliveryRecorded(CanonicalModel):
    """The carrier reported a parcel delivered (or failed)."""

    tracking_number: NonEmptyStr
    status: NonEmptyStr


class ActionOutcome(CanonicalModel):
    """What became of an operator's action: accepted, with what it did."""

    accepted: bool
    message: str


class StepRecord(CanonicalModel):
    """A step that finished, when (workflow time), and what it produced."""

    step: str
    at: str
    detail: str | None = None


class SystemIds(CanonicalModel):
    """Where the order lives in each system, as the saga learned it."""

    erp_customer_id: str | None = None
    erp_order_id: str | None = None
    erp_external_id: str | None = None
    allocation_reference: str | None = None
    wms_order_id: str | None = None
    carrier_shipment_id: str | None = None
    tracking_numbers: list[str] = []
    channel_fulfillment_ids: list[str] = []
    erp_fulfillment_ids: list[str] = []
    erp_invoice_id: str | None = None


class OrderSagaState(CanonicalModel):
    """The `status` query's answer: everything an operator needs to know where an order is."""

    key: str
    channel: str
    status: OrderStatus
    current_step: SagaStep | None = None
    steps_done: list[StepRecord] = []
    compensations_done: list[StepRecord] = []
    ids: SystemIds = SystemIds()
    lines_ordered: dict[str, int] = {}
    lines_shipped: dict[str, int] = {}
    lines_cancelled: dict[str, int] = Field(
        default={}, description="Units of a partly shipped order cancelled in the warehouse and the ERP, per SKU"
    )
    needs_attention: bool = False
    attention_reason: str | None = None
    attention_step: str | None = None
    cancel_reason: str | None = None
    cancel_refusals: list[str] = Field(default=[], description="Cancels refused, each with who asked and why not")
    delivered: bool = False
    received_at_epoch_ms: int | None = None


class OrderToCashResult(CanonicalModel):
    """How an order's saga ended."""

    key: str
    status: OrderStatus
    state: OrderSagaState


# ---------------------------------------------------------------------------------------------
# The order view: the saga's state as a row, so status reads touch neither the ERP nor Temporal
# ---------------------------------------------------------------------------------------------


class OrderViewUpdate(CanonicalModel):
    """The saga's whole state at one transition; the view keeps only the newest `version`."""

    version: int = Field(ge=1, description="The saga's transition counter: a later update has a higher one")
    at: datetime = Field(description="Workflow time of the transition")
    channel_order_id: NonEmptyStr
    channel_customer_id: str | None = None
    order_total: Money
    state: OrderSagaState


class OrderView(CanonicalModel):
    """One order as the view holds it: where it is, what it waits on, and its ids in every system."""

    key: str
    channel: str
    channel_order_id: str
    erp_customer_id: str | None = None
    channel_customer_id: str | None = None
    status: OrderStatus
    needs_attention: bool = False
    attention_reason: str | None = None
    attention_step: str | None = None
    cancel_reason: str | None = None
    erp_order_id: str | None = None
    wms_order_id: str | None = None
    carrier_shipment_id: str | None = None
    erp_invoice_id: str | None = None
    tracking_numbers: list[str] = []
    order_total: Money
    step_times: dict[str, str] = Field(default={}, description="Step (or compensation) name to when it last finished")
    version: int
    created_at: datetime
    updated_at: datetime
    state: OrderSagaState


class OrderViewPage(CanonicalModel):
    """A page of the order view, newest first; pass `next_cursor` back for the next page."""

    orders: list[OrderView]
    next_cursor: str | None = None


# ---------------------------------------------------------------------------------------------
# Activities: one input and one result each
# ---------------------------------------------------------------------------------------------


class AcceptOrderInput(CanonicalModel):
    """Validate an order against master data and match (or create) its customer in the ERP."""

    order: Order
    customer_external_id: NonEmptyStr


class AcceptOrderResult(CanonicalModel):
    """The order's customer and items as the ERP knows them."""

    erp_customer_id: str
    terms: PaymentTerms
    item_ids: dict[str, str]
    item_weights_oz: dict[str, Decimal] = {}


class CreditCheckInput(CanonicalModel):
    """Check a terms customer's available credit against an order."""

    erp_customer_id: NonEmptyStr
    order_total: Money


class CreditDecision(StrEnum):
    """The credit check's business outcome."""

    APPROVED = "approved"
    HOLD = "hold"


class CreditCheckResult(CanonicalModel):
    """Approved, or held with the reason; a hold is an outcome, not a failure."""

    decision: CreditDecision
    reason: str
    standing: CreditStanding | None = None


class AllocateInput(CanonicalModel):
    """Reserve stock for an order's lines in the warehouse."""

    reference: NonEmptyStr
    order: Order


class AllocateResult(CanonicalModel):
    """The reservation made: full, partial or none (backordered)."""

    allocation: Allocation


class PublishAvailabilityInput(CanonicalModel):
    """Tell the channels that sell from the warehouse's stock how many units of these SKUs are left."""

    skus: list[NonEmptyStr] = Field(min_length=1)


class PublishAvailabilityResult(CanonicalModel):
    """What each channel was told per SKU, and the SKUs a channel has no listing for (left alone)."""

    published: dict[str, dict[str, int]] = Field(default={}, description="channel -> SKU -> units it may sell")
    unlisted: dict[str, list[str]] = Field(default={}, description="channel -> SKUs it does not list")


class ReleaseAllocationInput(CanonicalModel):
    """Give back an order's reserved stock."""

    reference: NonEmptyStr


class ReleaseAllocationResult(CanonicalModel):
    """Whether a reservation was there to release (no reservation is success too)."""

    released: bool


class PostSalesOrderInput(CanonicalModel):
    """Upsert the order in the ERP by external id."""

    order: Order
    external_id: NonEmptyStr
    erp_customer_id: NonEmptyStr
    item_ids: dict[str, str]
    location_id: str | None = None


class PostSalesOrderResult(CanonicalModel):
    """The ERP's sales order."""

    sales_order: SalesOrderRef


class CloseSalesOrderInput(CanonicalModel):
    """Close the ERP sales order posted for an order (found by external id)."""

    external_id: NonEmptyStr


class CloseSalesOrderResult(CanonicalModel):
    """Whether there was a sales order to close (none is success too)."""

    closed: bool


class BuyLabelInput(CanonicalModel):
    """Rate-shop and buy a label for an order's parcel."""

    reference: NonEmptyStr
    ship_from_warehouse_id: str | None = None
    ship_to: Address
    parcel: Parcel
    max_delivery_days: int | None = None


class BuyLabelResult(CanonicalModel):
    """The label bought."""

    label: Label
    ship_from: Address


class VoidLabelInput(CanonicalModel):
    """Void (refund) the label bought under a reference, if any."""

    reference: NonEmptyStr


class VoidLabelResult(CanonicalModel):
    """The label's refund status, or none if no label was bought."""

    refund_status: RefundStatus | None


class ReleaseToWarehouseInput(CanonicalModel):
    """Create the fulfillment order in the warehouse, with the label."""

    reference: NonEmptyStr
    order: Order
    allocation: Allocation
    label: Label | None = None


class ReleaseToWarehouseResult(CanonicalModel):
    """The warehouse's fulfillment order."""

    fulfillment_order: FulfillmentOrder


class CancelFulfillmentOrderInput(CanonicalModel):
    """Cancel the fulfillment order created under a reference, if any."""

    reference: NonEmptyStr


class CancelFulfillmentOrderResult(CanonicalModel):
    """What the warehouse managed to cancel; `None` when there was no fulfillment order."""

    outcome: CancellationOutcome | None
    reason: str | None = None


class ConfirmShipmentInput(CanonicalModel):
    """Tell the channel (tracking) and the ERP (item fulfillment) that a shipment left."""

    order: Order
    shipment: Shipment
    erp_order_id: NonEmptyStr
    erp_external_id: NonEmptyStr


class ConfirmShipmentOnChannelResult(CanonicalModel):
    """The channel's fulfillment record."""

    channel_fulfillment_id: str


class RecordFulfillmentResult(CanonicalModel):
    """The ERP's item fulfillment."""

    fulfillment: ErpDocumentRef


class InvoiceOrderInput(CanonicalModel):
    """Bill the sales order for what shipped."""

    erp_order_id: NonEmptyStr
    external_id: NonEmptyStr


class InvoiceOrderResult(CanonicalModel):
    """The invoice raised."""

    invoice: Invoice


class CancelOnChannelInput(CanonicalModel):
    """Cancel the order on its channel, because orderflow (not the channel) decided to cancel."""

    order: Order
    reason: NonEmptyStr


class CancelOnChannelResult(CanonicalModel):
    """Whether the channel accepted (or had already done) the cancellation."""

    cancelled: bool
    detail: str | None = None


UnitsBySku = dict[Sku, Annotated[int, Field(gt=0)]]


class CancelUnshippedLinesInput(CanonicalModel):
    """Cancel, in the warehouse, the units of a partly shipped order that have not shipped."""

    reference: NonEmptyStr
    quantities: UnitsBySku = Field(min_length=1, description="Units per SKU to cancel")


class CancelUnshippedLinesResult(CanonicalModel):
    """What the warehouse cancelled and what it still holds to ship; no fulfillment order is success too."""

    cancelled: dict[str, int] = Field(description="Units per SKU the warehouse no longer ships")
    fulfillment_order: FulfillmentOrder | None = None


class CloseUnshippedLinesInput(CanonicalModel):
    """Close, on the ERP sales order (found by external id), units that will not ship."""

    external_id: NonEmptyStr
    quantities: UnitsBySku = Field(min_length=1, description="Units per SKU to close")


class CloseUnshippedLinesResult(CanonicalModel):
    """The sales order after closing; `None` when no sales order was posted."""

    sales_order: SalesOrder | None = None


def idempotency_key(order_key: str, step: str) -> str:
    """The key a step's side effect carries, derived from the saga's ID so every retry repeats it.

    Vendors restrict key characters (NetSuite external ids: letters, digits, `_` and `-`), so the
    workflow ID's separators become `-`: `order:shopify:1042` + `post_to_erp` ->
    `OF-shopify-1042-post_to_erp`.
    """
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in order_key.removeprefix("order:"))
    return f"OF-{safe}-{step}" if step else f"OF-{safe}"


def order_reference(order_key: str) -> str:
    """The one reference an order carries in the ERP, the warehouse and the carrier."""
    return idempotency_key(order_key, "")


def order_key_from_reference(reference: str) -> str | None:
    """The saga key an order reference (`OF-shopify-1042`) was made from, or None if it is not one.

    Channel names contain no `-`, so the first `-` after the channel ends it; the channel's own order
    id may contain `-` (Amazon's do) and is kept whole.
    """
    if not reference.startswith("OF-"):
        return None
    channel, sep, channel_order_id = reference.removeprefix("OF-").partition("-")
    if not sep or not channel or not channel_order_id:
        return None
    return f"order:{channel}:{channel_order_id}"
