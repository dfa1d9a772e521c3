"""The return-to-refund saga's contract: its status, its messages, and every activity's input and result.

What `saga.py` is to order to cash, this is to `ReturnToRefund`: the names and shapes the workflow,
its activities, the webhook service and the CLI agree on. Nothing here does I/O.

How the edges drive the saga:
- **Start** `ReturnToRefund` (workflow type `WORKFLOW_TYPE`) on `TASK_QUEUE` with
  `return_to_refund_input(ret, origin=..., settings=settings.returns)`, workflow ID `ret.key`
  (`return:{channel}:{return_id}`) and `orderflow.temporal.initial_return_search_attributes(ret)`.
  A second start for the same return (Shopify's `returns/request`, then `returns/approve`) is
  refused by the workflow ID, so at most one saga runs per return.
- **The WMS receipt webhook** is signalled as `return_received` with `ReturnReceived(receipt=...)`
  to the workflow `return_key_from_reference(receipt.reference)`. Several receipts may come; a
  repeated `receipt_id` is ignored.
- **Operators** use the order saga's names and models: signals `cancel`, `retry`, `skip` and updates
  `request_cancel`, `request_retry`, `request_skip` (`CancelRequest`, `OperatorCommand` ->
  `ActionOutcome`), and the `status` query (`ReturnSagaState`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from orderflow.canonical.base import CanonicalModel, NonEmptyStr, Sku
from orderflow.canonical.erp import CreditMemo, ErpDocumentRef
from orderflow.canonical.fulfillment import Label, Parcel, RefundStatus, StockLevel
from orderflow.canonical.money import Money
from orderflow.canonical.order import Channel, Order
from orderflow.canonical.party import Address
from orderflow.canonical.returns import ChannelRefundRef, Refund, Return, ReturnLine, ReturnReceipt, WmsReturn
from orderflow.canonical.saga import (
    QUERY_STATUS,
    SIGNAL_CANCEL,
    SIGNAL_RETRY,
    SIGNAL_SKIP,
    TASK_QUEUE,
    UPDATE_CANCEL,
    UPDATE_RETRY,
    UPDATE_SKIP,
    ActionOutcome,
    CancelRequest,
    CancelSource,
    OperatorCommand,
    StepRecord,
)

if TYPE_CHECKING:
    from orderflow.settings import ReturnSettings

WORKFLOW_TYPE = "ReturnToRefund"
SIGNAL_RETURN_RECEIVED = "return_received"

__all__ = [
    "QUERY_STATUS",
    "SIGNAL_CANCEL",
    "SIGNAL_RETRY",
    "SIGNAL_RETURN_RECEIVED",
    "SIGNAL_SKIP",
    "TASK_QUEUE",
    "UPDATE_CANCEL",
    "UPDATE_RETRY",
    "UPDATE_SKIP",
    "WORKFLOW_TYPE",
    "ActionOutcome",
    "CancelRequest",
    "CancelSource",
    "OperatorCommand",
    "StepRecord",
]


class ReturnStatus(StrEnum):
    """Where a return is on its way to a refund; the `ReturnStatus` search attribute holds this."""

    REQUESTED = "REQUESTED"
    REFUSED = "REFUSED"
    AUTHORIZED = "AUTHORIZED"
    LABELLED = "LABELLED"
    AWAITING_RECEIPT = "AWAITING_RECEIPT"
    PARTIALLY_RECEIVED = "PARTIALLY_RECEIVED"
    RECEIVED = "RECEIVED"
    CREDITED = "CREDITED"
    REFUNDED = "REFUNDED"
    COMPLETED = "COMPLETED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class ReturnStep(StrEnum):
    """The steps of return to refund, in order (DESIGN.md §5)."""

    VALIDATE = "validate"
    APPROVE_ON_CHANNEL = "approve_on_channel"
    AUTHORIZE = "authorize"
    BUY_LABEL = "buy_label"
    SEND_LABEL = "send_label"
    CREATE_WMS_RETURN = "create_wms_return"
    AWAIT_RECEIPT = "await_receipt"
    RESTOCK = "restock"
    RECEIVE_IN_ERP = "receive_in_erp"
    CREDIT = "credit"
    REFUND = "refund"
    CLOSE = "close"
    DECLINE_ON_CHANNEL = "decline_on_channel"


class ReturnCompensationStep(StrEnum):
    """The undo of each step that changes another system, before any goods came back."""

    CANCEL_WMS_RETURN = "cancel_wms_return"
    VOID_RETURN_LABEL = "void_return_label"
    CLOSE_RETURN_AUTHORIZATION = "close_return_authorization"
    CANCEL_ON_CHANNEL = "cancel_return_on_channel"


class ReturnOrigin(StrEnum):
    """Who opened the return: a channel return is kept in step with the channel, an operator's is not."""

    # The customer asked on the channel (Shopify `returns/request` or `returns/approve`):
    # `Return.return_id` is the channel's return id, approved, labelled, closed or cancelled there.
    CHANNEL = "channel"
    # `orderflow returns start`: no return exists on the channel; only the refund goes there.
    OPERATOR = "operator"


class RefundMethod(StrEnum):
    """What the ERP records for the money going back."""

    CREDIT_MEMO = "credit_memo"
    CASH_REFUND = "cash_refund"


class ReturnPolicy(CanonicalModel):
    """The return policy in force when the return started; part of the input, so history keeps it."""

    window_days: int = Field(default=30, ge=0, description="Days after shipment a return may be requested")
    restocking_fee_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    write_off_location_id: str | None = Field(
        default=None, description="ERP location damaged units are received into; None: the return's own location"
    )
    refund_method: RefundMethod = RefundMethod.CREDIT_MEMO
    receipt_deadline: timedelta = Field(default=timedelta(days=30), description="How long to wait for the goods")
    partial_receipt_grace: timedelta = Field(
        default=timedelta(0), description="After a first receipt, how long to wait for the rest before settling"
    )


class ReturnToRefundInput(CanonicalModel):
    """Start a return's saga: the customer's return (naming the original order), who opened it, the policy."""

    return_request: Return
    origin: ReturnOrigin = ReturnOrigin.CHANNEL
    policy: ReturnPolicy = ReturnPolicy()

    @model_validator(mode="after")
    def _order_on_the_return_channel(self) -> ReturnToRefundInput:
        request = self.return_request
        channel_order_id_of(request.order_key)  # refuses a key that is not order:{channel}:{id}
        if request.order_key.split(":")[1] != request.channel.value:
            raise ValueError(f"return on {request.channel.value} names order {request.order_key} of another channel")
        return self

    @property
    def key(self) -> str:
        """The saga's workflow ID."""
        return self.return_request.key


class ReturnReceived(CanonicalModel):
    """The warehouse opened a box of the return: these units, in this condition."""

    receipt: ReturnReceipt


class ReturnSystemIds(CanonicalModel):
    """Where the return lives in each system, as the saga learned it."""

    erp_order_id: str | None = None
    erp_customer_id: str | None = None
    erp_return_authorization_id: str | None = None
    erp_item_receipt_ids: list[str] = []
    erp_credit_id: str | None = Field(default=None, description="The credit memo or cash refund")
    carrier_shipment_id: str | None = None
    tracking_number: str | None = None
    label_url: str | None = None
    wms_order_id: str | None = None
    wms_return_id: str | None = None
    channel_refund_id: str | None = None


class ReturnSagaState(CanonicalModel):
    """The `status` query's answer: where the return is, what came back, and what was paid back."""

    key: str
    channel: str
    return_id: str
    order_key: str
    origin: ReturnOrigin
    status: ReturnStatus
    current_step: ReturnStep | None = None
    steps_done: list[StepRecord] = []
    compensations_done: list[StepRecord] = []
    ids: ReturnSystemIds = ReturnSystemIds()
    lines_requested: dict[str, int] = {}
    lines_received: dict[str, int] = Field(default={}, description="Every unit received, sellable or damaged")
    lines_damaged: dict[str, int] = {}
    receipt_ids: list[str] = []
    refusal_reasons: list[str] = []
    receipt_deadline: datetime | None = None
    erp_credit_total: Money | None = None
    refund_total: Money | None = None
    restocking_fee: Money | None = None
    needs_attention: bool = False
    attention_reason: str | None = None
    attention_step: str | None = None
    cancel_reason: str | None = None


class ReturnToRefundResult(CanonicalModel):
    """How a return's saga ended: completed, refused, cancelled or expired."""

    key: str
    status: ReturnStatus
    state: ReturnSagaState


# ---------------------------------------------------------------------------------------------
# Activities: one input and one result each
# ---------------------------------------------------------------------------------------------


class LoadChannelOrderInput(CanonicalModel):
    """Read the original order from its channel: lines, prices, taxes, line ids for the refund."""

    channel: Channel
    channel_order_id: NonEmptyStr


class LoadChannelOrderResult(CanonicalModel):
    """The order as the channel holds it, or None when the channel has no such order."""

    order: Order | None


class LoadErpOrderInput(CanonicalModel):
    """Read what the ERP knows about the original order: shipped units and earlier returns."""

    order_key: NonEmptyStr
    skus: list[Sku] = Field(description="The SKUs being returned, for their items and weights")
    return_authorization_external_id: NonEmptyStr = Field(description="This return's own RA, not an earlier return")


class LoadErpOrderResult(CanonicalModel):
    """Units shipped and already returned per SKU; found=False when the order never reached the ERP."""

    found: bool
    erp_order_id: str | None = None
    erp_customer_id: str | None = None
    shipped: dict[str, int] = {}
    returned_earlier: dict[str, int] = Field(
        default={}, description="Units on other return authorizations: authorized, or received once closed"
    )
    item_weights_oz: dict[str, Decimal] = {}


class LoadWarehouseOrderInput(CanonicalModel):
    """Read the original order's fulfillment in the warehouse: where from and when it shipped."""

    order_reference: NonEmptyStr


class LoadWarehouseOrderResult(CanonicalModel):
    """The fulfillment order and its last shipment, or nothing when the warehouse never had it."""

    wms_order_id: str | None = None
    warehouse_id: str | None = None
    last_shipped_at: datetime | None = None


class ChannelReturnInput(CanonicalModel):
    """Act on the channel's own return (approve, close, cancel) for a return the customer opened there."""

    channel: Channel
    channel_return_id: NonEmptyStr
    reason: str | None = None


class ChannelReturnResult(CanonicalModel):
    """What the channel did."""

    detail: str


class SendReturnLabelInput(CanonicalModel):
    """Hand the return label to the channel, which shows it to the customer."""

    channel: Channel
    channel_return_id: NonEmptyStr
    label: Label


class CreateReturnAuthorizationInput(CanonicalModel):
    """Authorize the return in the ERP (salesOrder -> returnAuthorization), once per external id."""

    erp_order_id: NonEmptyStr
    lines: list[ReturnLine] = Field(min_length=1)
    external_id: NonEmptyStr


class CreateReturnAuthorizationResult(CanonicalModel):
    """The ERP's return authorization."""

    authorization: ErpDocumentRef


class CloseReturnAuthorizationInput(CanonicalModel):
    """Close the return authorization filed under an external id (found through the sales order)."""

    erp_order_id: NonEmptyStr
    external_id: NonEmptyStr


class CloseReturnAuthorizationResult(CanonicalModel):
    """Whether there was a return authorization to close (none is success too)."""

    closed: bool
    status: str | None = None


class BuyReturnLabelInput(CanonicalModel):
    """Buy a prepaid return label from the customer back to the warehouse that shipped the order."""

    reference: NonEmptyStr
    customer: Address = Field(description="Where the order was delivered: the return's origin")
    warehouse_id: str | None = Field(default=None, description="The warehouse the order shipped from")
    parcel: Parcel


class BuyReturnLabelResult(CanonicalModel):
    """The return label bought, and the warehouse it brings the parcel to."""

    label: Label
    warehouse: Address


class VoidReturnLabelInput(CanonicalModel):
    """Void (refund) the return label bought under a reference, if any."""

    reference: NonEmptyStr


class VoidReturnLabelResult(CanonicalModel):
    """The label's refund status, or none if no label was bought."""

    refund_status: RefundStatus | None


class CreateWmsReturnInput(CanonicalModel):
    """Tell the warehouse a return is on its way (ShipBob return order), once per reference."""

    reference: NonEmptyStr
    lines: list[ReturnLine] = Field(min_length=1)
    original_wms_order_id: str | None = None
    tracking_number: str | None = None
    warehouse_id: str | None = None


class CreateWmsReturnResult(CanonicalModel):
    """The warehouse's return."""

    wms_return: WmsReturn


class CancelWmsReturnInput(CanonicalModel):
    """Cancel the warehouse return created under a reference, if any."""

    reference: NonEmptyStr


class CancelWmsReturnResult(CanonicalModel):
    """Whether there was a warehouse return to cancel, and its status after."""

    cancelled: bool
    status: str | None = None


class RestockReturnInput(CanonicalModel):
    """Put one receipt's sellable units back into fulfillable stock (damaged ones stay out)."""

    wms_return_id: NonEmptyStr
    receipt: ReturnReceipt


class RestockReturnResult(CanonicalModel):
    """Stock of the restocked SKUs after the receipt."""

    stock: list[StockLevel]


class ReceiveReturnInput(CanonicalModel):
    """Record units received against the return authorization (an item receipt), at a location."""

    erp_return_authorization_id: NonEmptyStr
    lines: list[ReturnLine] = Field(min_length=1)
    external_id: NonEmptyStr
    location_id: str | None = None


class ReceiveReturnResult(CanonicalModel):
    """The ERP's item receipt."""

    item_receipt: ErpDocumentRef


class IssueReturnCreditInput(CanonicalModel):
    """Credit the customer in the ERP for what was received (credit memo or cash refund)."""

    erp_return_authorization_id: NonEmptyStr
    external_id: NonEmptyStr
    method: RefundMethod = RefundMethod.CREDIT_MEMO
    tax: Money | None = Field(default=None, description="Tax the channel refunds for these units, posted as is")
    restocking_fee: Money | None = Field(default=None, description="Kept back from the credit")


class IssueReturnCreditResult(CanonicalModel):
    """The credit memo or cash refund, with its lines and total."""

    credit: CreditMemo


class RefundOnChannelInput(CanonicalModel):
    """Pay the buyer back on the channel, once per idempotency key."""

    channel: Channel
    channel_order_id: NonEmptyStr
    refund: Refund
    idempotency_key: NonEmptyStr


class RefundOnChannelResult(CanonicalModel):
    """The channel's refund; `already_issued` when an earlier attempt had made it."""

    refund: ChannelRefundRef
    already_issued: bool = False


# ---------------------------------------------------------------------------------------------
# Keys and the start helper
# ---------------------------------------------------------------------------------------------


def return_key(channel: Channel | str, return_id: str) -> str:
    """The workflow ID of a return's saga: `return:{channel}:{return_id}` (as `Return.key`)."""
    return f"return:{Channel(channel).value}:{return_id}"


def return_reference(key: str) -> str:
    """The one reference a return carries in the carrier and the warehouse: `OFR-shopify-5001`.

    `OFR-`, not the order's `OF-`, so `order_key_from_reference` never mistakes it for an order.
    Vendors restrict key characters (NetSuite: letters, digits, `_`, `-`), so others become `-`.
    """
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in key.removeprefix("return:"))
    return f"OFR-{safe}"


def return_step_key(key: str, step: str) -> str:
    """The idempotency key (ERP external id, refund key) of one step of a return: `OFR-shopify-5001-credit`."""
    safe_step = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in step)
    return f"{return_reference(key)}-{safe_step}"


def return_key_from_reference(reference: str) -> str | None:
    """The saga key a return reference was made from (exact for return ids of letters, digits, `_`, `-`)."""
    if not reference.startswith("OFR-"):
        return None
    channel, sep, return_id = reference.removeprefix("OFR-").partition("-")
    if not sep or not return_id or channel not in {c.value for c in Channel}:
        return None
    return return_key(channel, return_id)


def channel_order_id_of(order_key: str) -> str:
    """The channel's own order id in an order key: `order:shopify:1042` -> `1042`."""
    prefix, _, rest = order_key.partition(":")
    _channel, sep, channel_order_id = rest.partition(":")
    if prefix != "order" or not sep or not channel_order_id:
        raise ValueError(f"{order_key!r} is not an order key (order:{{channel}}:{{channel_order_id}})")
    return channel_order_id


def return_policy(settings: ReturnSettings) -> ReturnPolicy:
    """The policy the `returns` settings describe, to snapshot into a saga's input."""
    return ReturnPolicy(
        window_days=settings.window_days,
        restocking_fee_percent=settings.restocking_fee_percent,
        write_off_location_id=settings.write_off_location_id,
        refund_method=RefundMethod(settings.refund_method),
        receipt_deadline=settings.receipt_deadline,
        partial_receipt_grace=settings.partial_receipt_grace,
    )


def operator_return(
    order_key: str, lines: Mapping[str, int], *, return_id: str, requested_at: datetime, reason: str | None = None
) -> Return:
    """A return an operator opens (`orderflow returns start --order KEY --lines SKU:QTY,...`) on the order's channel.

    `return_id` is the caller's (e.g. `ops-` and a short random hex); letters, digits, `_` and `-`
    keep `return_key_from_reference` exact. Start it with `origin=ReturnOrigin.OPERATOR`.
    """
    channel_order_id_of(order_key)
    return Return(
        channel=Channel(order_key.split(":")[1]),
        return_id=return_id,
        order_key=order_key,
        lines=[ReturnLine(sku=sku, quantity=quantity, reason=reason) for sku, quantity in lines.items()],
        requested_at=requested_at,
    )


def return_to_refund_input(
    return_request: Return, *, origin: ReturnOrigin = ReturnOrigin.CHANNEL, settings: ReturnSettings | None = None
) -> ReturnToRefundInput:
    """The saga's input for a return, with today's policy from settings (the defaults without them)."""
    policy = return_policy(settings) if settings is not None else ReturnPolicy()
    return ReturnToRefundInput(return_request=return_request, origin=origin, policy=policy)
