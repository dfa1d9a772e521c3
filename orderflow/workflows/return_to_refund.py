"""Return to refund: the saga that takes a customer's return from request to refund, or undoes what it began.

It reads like DESIGN.md §5: validate against the original order, authorize the return in the ERP,
buy a return label and hand it to the channel, tell the warehouse, wait for the goods, restock what
is sellable and write off what is not, credit the customer in the ERP, refund on the channel.

- A refusal (not shipped, over the shipped quantity net of earlier returns, outside the window) is
  an outcome with reasons, not a failure; a channel return is declined there.
- Nothing received by the deadline expires the return; an operator's cancel before any goods came
  back does the same undo: cancel the warehouse return, void the label, close the return
  authorization, cancel the channel's return.
- A permanent failure parks the saga with `NeedsAttention` until an operator retries, skips (where
  the step allows) or cancels (before receipt), as in order to cash.
- The refund is made at most once: one refund per return, after the goods are in, under one
  idempotency key that the activity looks up before it refunds.

Workflow code only decides. Every side effect is an activity; time is `workflow.now()`; the
receipt deadline is a durable timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from orderflow.activities.returns import (
        ReturnCarrierActivities,
        ReturnChannelActivities,
        ReturnErpActivities,
        ReturnWarehouseActivities,
    )
    from orderflow.canonical import Channel, ItemCondition, Label, Money, Order, Parcel, Refund, RefundLine
    from orderflow.canonical.erp import CreditMemo
    from orderflow.canonical.return_saga import (
        QUERY_STATUS,
        SIGNAL_CANCEL,
        SIGNAL_RETRY,
        SIGNAL_RETURN_RECEIVED,
        SIGNAL_SKIP,
        UPDATE_CANCEL,
        UPDATE_RETRY,
        UPDATE_SKIP,
        WORKFLOW_TYPE,
        ActionOutcome,
        BuyReturnLabelInput,
        CancelRequest,
        CancelSource,
        CancelWmsReturnInput,
        ChannelReturnInput,
        CloseReturnAuthorizationInput,
        CreateReturnAuthorizationInput,
        CreateWmsReturnInput,
        IssueReturnCreditInput,
        LoadChannelOrderInput,
        LoadErpOrderInput,
        LoadErpOrderResult,
        LoadWarehouseOrderInput,
        LoadWarehouseOrderResult,
        OperatorCommand,
        ReceiveReturnInput,
        ReceiveReturnResult,
        RefundOnChannelInput,
        RestockReturnInput,
        ReturnCompensationStep,
        ReturnOrigin,
        ReturnReceived,
        ReturnSagaState,
        ReturnStatus,
        ReturnStep,
        ReturnSystemIds,
        ReturnToRefundInput,
        ReturnToRefundResult,
        SendReturnLabelInput,
        StepRecord,
        VoidReturnLabelInput,
        channel_order_id_of,
        return_reference,
        return_step_key,
    )
    from orderflow.canonical.returns import Return, ReturnLine, ReturnReceipt
    from orderflow.canonical.saga import OPERATOR_RECORD, order_reference
    from orderflow.temporal import CHANNEL, CUSTOMER_ID, NEEDS_ATTENTION, RETURN_STATUS
    from orderflow.workflows.availability import AvailabilityPublications
    from orderflow.workflows.compensation import Compensation, Compensations

T = TypeVar("T")

# As in order to cash: transient failures are retried for as long as it takes, backing off to a
# minute; permanent ones are raised non-retryable by the activities and park the saga instead.
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(minutes=1))  # fmt: skip
ACTIVITY_TIMEOUT = timedelta(seconds=60)

# Steps an operator may skip: the return can go on without them and a person can do them by hand.
# Authorizing, receiving in the ERP, crediting and refunding cannot: the money depends on them, and a
# refund made by hand in Shopify admin would come back as a second credit memo.
SKIPPABLE = frozenset(
    {ReturnStep.APPROVE_ON_CHANNEL, ReturnStep.BUY_LABEL, ReturnStep.SEND_LABEL, ReturnStep.RESTOCK,
     ReturnStep.CLOSE, ReturnStep.DECLINE_ON_CHANNEL}
)  # fmt: skip
TERMINAL = frozenset({ReturnStatus.COMPLETED, ReturnStatus.REFUSED, ReturnStatus.CANCELLED, ReturnStatus.EXPIRED})

# The customer packs the return; the label declares a box sized by weight tier (ounces, inches).
PACKAGING_OZ = Decimal(4)
DEFAULT_ITEM_OZ = Decimal(16)
BOXES = ((Decimal(16), (9, 6, 3)), (Decimal(80), (12, 10, 6)), (Decimal(400), (18, 14, 10)))
LARGEST_BOX = (24, 18, 18)


class ReturnCancelledError(Exception):
    """Raised inside the saga when a cancel (or the deadline) has been accepted; unwinds to the compensations."""

    def __init__(self, request: CancelRequest) -> None:
        super().__init__(request.reason)
        self.request = request


# ---------------------------------------------------------------------------------------------
# The business rules, as pure functions of the facts the activities read
# ---------------------------------------------------------------------------------------------


def units_by_sku(lines: list[ReturnLine]) -> dict[str, int]:
    """Units per SKU over return lines."""
    units: dict[str, int] = {}
    for line in lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return units


def validate_return(
    request: Return,
    *,
    order: Order | None,
    erp: LoadErpOrderResult | None,
    shipped_at: datetime | None,
    window_days: int,
) -> list[str]:
    """Why the return cannot be accepted (empty when it can): only shipped units, net of earlier returns, in time."""
    key = request.order_key
    if order is None:
        return [f"order {key} is not on {request.channel.value}"]
    if erp is None or not erp.found:
        return [f"order {key} was never posted to the ERP, so nothing of it has shipped"]
    reasons: list[str] = []
    # The window runs from the last shipment (the order date when the warehouse has no record).
    start = shipped_at or order.placed_at
    if request.requested_at - start > timedelta(days=window_days):
        days = (request.requested_at - start).days
        reasons.append(
            f"requested {days} days after the order shipped on {start.date().isoformat()}; "
            f"the return window is {window_days} days"
        )
    for sku, quantity in sorted(units_by_sku(request.lines).items()):
        if order.quantity_of(sku) == 0:
            reasons.append(f"{sku} is not on order {key}")
            continue
        shipped = erp.shipped.get(sku, 0)
        earlier = erp.returned_earlier.get(sku, 0)
        returnable = max(0, shipped - earlier)
        if quantity > returnable:
            reasons.append(
                f"{sku}: {quantity} requested but {returnable} returnable "
                f"({shipped} shipped, {earlier} already returned)"
            )
    return reasons


def return_parcel(lines: list[ReturnLine], weights_oz: Mapping[str, Decimal]) -> Parcel:
    """The box a return travels in: its items' weight plus packaging, in the smallest box for the tier."""
    weight = PACKAGING_OZ + sum(
        (weights_oz.get(line.sku, DEFAULT_ITEM_OZ) * line.quantity for line in lines), Decimal(0)
    )
    dims = next((box for limit, box in BOXES if weight <= limit), LARGEST_BOX)
    return Parcel(length_in=Decimal(dims[0]), width_in=Decimal(dims[1]), height_in=Decimal(dims[2]), weight_oz=weight)


@dataclass(frozen=True)
class RefundQuote:
    """What goes back to the buyer: merchandise, its tax, less the restocking fee."""

    refund: Refund
    merchandise: Money
    tax: Money
    restocking_fee: Money


def refund_for(
    order: Order,
    received: Mapping[str, int],
    *,
    restocking_fee_percent: Decimal,
    credit: CreditMemo | None = None,
    restocking_fee: Money | None = None,
    note: str,
) -> RefundQuote:
    """The channel refund for received units: their merchandise, plus proportional tax, less the restocking fee.

    Merchandise is priced as the ERP prices a partial line (the line's net per unit, times the
    units, to the cent). Once the ERP has credited the units, its credit is the book of record: a
    SKU's merchandise is then what the credit memo says for it. Tax is the order line's tax in
    proportion to the units; shipping is not refunded for a return. The fee is a percentage of the
    merchandise, unless given (the one already posted to the ERP).
    """
    currency = order.currency
    zero = Money.zero(currency)
    credited: dict[str, Money] = {}
    for credit_line in credit.lines if credit is not None else []:
        if credit_line.sku is not None:
            credited[credit_line.sku] = credited.get(credit_line.sku, zero) + credit_line.amount
    lines: list[RefundLine] = []
    merchandise = zero
    tax = zero
    for sku, quantity in sorted(received.items()):
        left = quantity
        sku_lines: list[tuple[str, int, Money, Money]] = []
        for line in order.lines:
            if line.sku != sku or left <= 0:
                continue
            take = min(left, line.quantity)
            left -= take
            line_net = Money(amount=line.net.amount / line.quantity * take, currency=currency).rounded()
            line_tax = Money(amount=line.tax_total.amount / line.quantity * take, currency=currency).rounded()
            sku_lines.append((line.line_id, take, line_net, line_tax))
        if not sku_lines:
            continue
        own = sum((net for _, _, net, _ in sku_lines), zero)
        # Any cent between the ERP's figure and ours lands on the SKU's last line.
        line_id, take, net, line_tax = sku_lines[-1]
        sku_lines[-1] = (line_id, take, net + (credited.get(sku, own) - own), line_tax)
        for line_id, take, net, line_tax in sku_lines:
            lines.append(RefundLine(line_id=line_id, sku=sku, quantity=take, amount=net + line_tax, restock=False))
            merchandise = merchandise + net
            tax = tax + line_tax
    if restocking_fee is None:
        restocking_fee = Money(amount=merchandise.amount * restocking_fee_percent / 100, currency=currency).rounded()
    amount = merchandise + tax - restocking_fee
    if amount.amount < 0:
        amount = zero
    refund = Refund(order_key=order.key, lines=lines, total=amount, reason="return", note=note)
    return RefundQuote(refund=refund, merchandise=merchandise, tax=tax, restocking_fee=restocking_fee)


def failure_reason(error: ActivityError) -> tuple[bool, str]:
    """Whether an activity failure is permanent, and the reason an operator should read."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.non_retryable, f"{cause.type or 'ApplicationError'}: {cause.message}"
    return False, str(cause or error)


# ---------------------------------------------------------------------------------------------
# The saga
# ---------------------------------------------------------------------------------------------


@workflow.defn(name=WORKFLOW_TYPE)
class ReturnToRefund:
    """One return's journey from request to refund, with its compensations."""

    @workflow.init
    def __init__(self, input: ReturnToRefundInput) -> None:
        self.input = input
        self.request = input.return_request
        self.policy = input.policy
        self.key = self.request.key
        self.reference = return_reference(self.key)
        self.status = ReturnStatus.REQUESTED
        self.current_step: ReturnStep | None = None
        self.steps_done: list[StepRecord] = []
        self.compensations_done: list[StepRecord] = []
        self.compensations: Compensations[ReturnCompensationStep] = Compensations()
        self.ids: dict[str, Any] = {"erp_item_receipt_ids": []}
        self.refusal_reasons: list[str] = []
        self.attention_reason: str | None = None
        self.attention_step: str | None = None
        self.parked = False
        self.parked_skippable = False
        self.operator_choice: str | None = None
        # Who chose it and why: recorded in the steps done when the parked step resumes.
        self.operator_command: OperatorCommand | None = None
        self.cancel_request: CancelRequest | None = None
        self.cancel_refusals: list[str] = []
        self.order: Order | None = None
        self.erp: LoadErpOrderResult | None = None
        self.warehouse: LoadWarehouseOrderResult | None = None
        self.label: Label | None = None
        # Receipts in arrival order (deduplicated by receipt id), and which of them are booked.
        self.receipts: list[ReturnReceipt] = []
        self.processed: set[str] = set()
        self.received: dict[str, int] = {}
        self.damaged: dict[str, int] = {}
        self.receipt_deadline: datetime | None = None
        self.availability = AvailabilityPublications()
        self.credit: CreditMemo | None = None
        self.refund_total: Money | None = None
        self.restocking_fee: Money | None = None
        # Search attribute changes waiting to be sent: one upsert per wait keeps history lean.
        self.pending_attributes: dict[str, SearchAttributeUpdate[Any]] = {}

    @workflow.run
    async def run(self, input: ReturnToRefundInput) -> ReturnToRefundResult:
        """Take the return through every step; on cancel or expiry, undo in reverse."""
        self._publish()
        # Restocked units are for sale again: the channels hear of them (workflows/availability.py).
        self.availability.start()
        try:
            await self.validate()
            if self.refusal_reasons:
                await self.decline()
            else:
                await self.approve_on_channel()
                await self.authorize()
                await self.buy_label()
                await self.send_label()
                await self.create_wms_return()
                await self.await_receipts()
                await self.issue_credit()
                await self.refund()
                await self.close()
                self._set_status(ReturnStatus.COMPLETED)
        except ReturnCancelledError as cancelled:
            await self._unwind(cancelled.request)
        except asyncio.CancelledError:
            # Cancelled from the Temporal UI: an operator's cancel, refused the same way once goods are back.
            if self.receipts:
                raise
            await self._unwind(CancelRequest(reason="cancelled through Temporal", source=CancelSource.OPERATOR))
        await self.availability.settled()
        self._flush_attributes()
        return ReturnToRefundResult(key=self.key, status=self.status, state=self.state())

    # -----------------------------------------------------------------------------------------
    # Steps
    # -----------------------------------------------------------------------------------------

    async def validate(self) -> None:
        """Check the return against the original order: shipped units, net of earlier returns, in the window."""
        order_key = self.request.order_key
        loaded = await self._step(
            ReturnStep.VALIDATE,
            lambda: workflow.execute_activity_method(
                ReturnChannelActivities.load_channel_order,
                LoadChannelOrderInput(channel=self.request.channel, channel_order_id=channel_order_id_of(order_key)),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert loaded is not None
        self.order = loaded.order
        if self.order is not None:
            self.erp = await self._step(
                ReturnStep.VALIDATE,
                lambda: workflow.execute_activity_method(
                    ReturnErpActivities.load_erp_order_for_return,
                    LoadErpOrderInput(
                        order_key=order_key,
                        skus=sorted(units_by_sku(self.request.lines)),
                        return_authorization_external_id=return_step_key(self.key, "ra"),
                    ),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
            )
            assert self.erp is not None
            self.ids["erp_order_id"] = self.erp.erp_order_id
            if self.erp.erp_customer_id:
                self.ids["erp_customer_id"] = self.erp.erp_customer_id
                self._stage(CUSTOMER_ID.value_set(self.erp.erp_customer_id))
            self.warehouse = await self._step(
                ReturnStep.VALIDATE,
                lambda: workflow.execute_activity_method(
                    ReturnWarehouseActivities.load_warehouse_order_for_return,
                    LoadWarehouseOrderInput(order_reference=order_reference(order_key)),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
            )
            assert self.warehouse is not None
            self.ids["wms_order_id"] = self.warehouse.wms_order_id
        self.refusal_reasons = validate_return(
            self.request,
            order=self.order,
            erp=self.erp,
            shipped_at=self.warehouse.last_shipped_at if self.warehouse else None,
            window_days=self.policy.window_days,
        )
        if self.refusal_reasons:
            self._done(ReturnStep.VALIDATE, "refused: " + "; ".join(self.refusal_reasons))
        else:
            units = sum(line.quantity for line in self.request.lines)
            self._done(ReturnStep.VALIDATE, f"{units} unit(s) returnable against {order_key}")

    async def decline(self) -> None:
        """A refused return ends here; a return the customer opened on the channel is declined there."""
        self._set_status(ReturnStatus.REFUSED)
        if self._channel_return():
            reason = "; ".join(self.refusal_reasons)
            result = await self._step(
                ReturnStep.DECLINE_ON_CHANNEL,
                lambda: workflow.execute_activity_method(
                    ReturnChannelActivities.cancel_channel_return,
                    ChannelReturnInput(
                        channel=self.request.channel, channel_return_id=self.request.return_id, reason=reason
                    ),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
                skippable=True,
            )
            self._done(ReturnStep.DECLINE_ON_CHANNEL, result.detail if result else "skipped by operator")

    async def approve_on_channel(self) -> None:
        """Approve the customer's request on the channel (no-op when it is approved already)."""
        if not self._channel_return():
            return
        result = await self._step(
            ReturnStep.APPROVE_ON_CHANNEL,
            lambda: workflow.execute_activity_method(
                ReturnChannelActivities.approve_channel_return,
                ChannelReturnInput(channel=self.request.channel, channel_return_id=self.request.return_id),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        self._done(ReturnStep.APPROVE_ON_CHANNEL, result.detail if result else "skipped by operator")

    async def authorize(self) -> None:
        """Create the ERP return authorization from the sales order, for the requested units."""
        assert self.erp is not None and self.erp.erp_order_id is not None
        erp_order_id = self.erp.erp_order_id
        self.compensations.register(ReturnCompensationStep.CLOSE_RETURN_AUTHORIZATION, self._close_authorization)
        result = await self._step(
            ReturnStep.AUTHORIZE,
            lambda: workflow.execute_activity_method(
                ReturnErpActivities.create_return_authorization,
                CreateReturnAuthorizationInput(
                    erp_order_id=erp_order_id,
                    lines=self.request.lines,
                    external_id=return_step_key(self.key, "ra"),
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.ids["erp_return_authorization_id"] = result.authorization.erp_id
        self._done(ReturnStep.AUTHORIZE, f"return authorization {result.authorization.erp_id}")
        self._set_status(ReturnStatus.AUTHORIZED)

    async def buy_label(self) -> None:
        """Buy a prepaid return label to the warehouse that shipped (skippable: the customer can ship their own way)."""
        assert self.order is not None and self.erp is not None
        self.compensations.register(ReturnCompensationStep.VOID_RETURN_LABEL, self._void_label)
        request = BuyReturnLabelInput(
            reference=self.reference,
            customer=self.order.ship_to,
            warehouse_id=self.warehouse.warehouse_id if self.warehouse else None,
            parcel=return_parcel(self.request.lines, self.erp.item_weights_oz),
        )
        result = await self._step(
            ReturnStep.BUY_LABEL,
            lambda: workflow.execute_activity_method(
                ReturnCarrierActivities.buy_return_label,
                request,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        if result is None:
            self._done(ReturnStep.BUY_LABEL, "skipped by operator: the customer ships it their own way")
        else:
            self.label = result.label
            self.ids.update(
                carrier_shipment_id=result.label.carrier_shipment_id,
                tracking_number=result.label.tracking_number,
                label_url=result.label.label_url,
            )
            self._done(ReturnStep.BUY_LABEL, f"{result.label.rate.carrier} {result.label.tracking_number}")
        self._set_status(ReturnStatus.LABELLED)

    async def send_label(self) -> None:
        """Give the label to the channel's return, so the customer gets it (skippable: it can be emailed)."""
        if self.label is None or not self._channel_return():
            return
        label = self.label
        result = await self._step(
            ReturnStep.SEND_LABEL,
            lambda: workflow.execute_activity_method(
                ReturnChannelActivities.send_return_label,
                SendReturnLabelInput(
                    channel=self.request.channel, channel_return_id=self.request.return_id, label=label
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        self._done(ReturnStep.SEND_LABEL, result.detail if result else "skipped by operator")

    async def create_wms_return(self) -> None:
        """Tell the warehouse the return is coming, with its tracking, against the original fulfillment."""
        self.compensations.register(ReturnCompensationStep.CANCEL_WMS_RETURN, self._cancel_wms_return)
        request = CreateWmsReturnInput(
            reference=self.reference,
            lines=self.request.lines,
            original_wms_order_id=self.warehouse.wms_order_id if self.warehouse else None,
            tracking_number=self.label.tracking_number if self.label else None,
            warehouse_id=self.warehouse.warehouse_id if self.warehouse else None,
        )
        result = await self._step(
            ReturnStep.CREATE_WMS_RETURN,
            lambda: workflow.execute_activity_method(
                ReturnWarehouseActivities.create_wms_return,
                request,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.ids["wms_return_id"] = result.wms_return.wms_return_id
        self._done(ReturnStep.CREATE_WMS_RETURN, f"WMS return {result.wms_return.wms_return_id}")
        self._set_status(ReturnStatus.AWAITING_RECEIPT)

    async def await_receipts(self) -> None:
        """Book each receipt as it comes until everything is back, or the deadline; nothing back expires the return."""
        self.current_step = ReturnStep.AWAIT_RECEIPT
        self.receipt_deadline = workflow.now() + self.policy.receipt_deadline
        while True:
            for receipt in self._unprocessed():
                await self.book_receipt(receipt)
            if self._fully_received():
                break
            remaining = self.receipt_deadline - workflow.now()
            if remaining <= timedelta(0):
                break
            await self._wait(lambda: bool(self._unprocessed()), timeout=remaining)
        if not self.received:
            raise ReturnCancelledError(
                CancelRequest(
                    reason=f"nothing received within {self.policy.receipt_deadline}", source=CancelSource.DEADLINE
                )
            )
        self.current_step = ReturnStep.AWAIT_RECEIPT
        units = sum(self.received.values())
        self._done(ReturnStep.AWAIT_RECEIPT, f"{units} unit(s) in {len(self.processed)} receipt(s)")

    async def book_receipt(self, receipt: ReturnReceipt) -> None:
        """Restock one receipt's sellable units in the WMS and receive it in the ERP (damaged to write-off)."""
        accepted, unexpected = self._accepted_lines(receipt)
        if unexpected:
            self._raise_attention(
                ReturnStep.AWAIT_RECEIPT,
                f"receipt {receipt.receipt_id} held units not expected on this return: {', '.join(unexpected)}",
                skippable=False,
                parked=False,
            )
        wms_return_id = self.ids.get("wms_return_id")
        if accepted and wms_return_id:
            restocked = await self._step(
                ReturnStep.RESTOCK,
                lambda: workflow.execute_activity_method(
                    ReturnWarehouseActivities.restock_return,
                    RestockReturnInput(wms_return_id=wms_return_id, receipt=receipt),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
                skippable=True,
            )
            sellable = sum(line.quantity for line in accepted if line.condition is ItemCondition.SELLABLE)
            detail = f"receipt {receipt.receipt_id}: {sellable} sellable unit(s) restocked"
            self._done(ReturnStep.RESTOCK, detail if restocked is not None else "skipped by operator")
            if restocked is not None:
                self.availability.publish(line.sku for line in accepted if line.condition is ItemCondition.SELLABLE)
        authorization_id = self.ids.get("erp_return_authorization_id")
        assert authorization_id is not None
        for condition, suffix, location in (
            (ItemCondition.SELLABLE, "s", None),
            (ItemCondition.DAMAGED, "d", self.policy.write_off_location_id),
        ):
            lines = [line for line in accepted if line.condition is condition]
            if not lines:
                continue
            receive = ReceiveReturnInput(
                erp_return_authorization_id=authorization_id,
                lines=lines,
                external_id=return_step_key(self.key, f"rcpt-{receipt.receipt_id}-{suffix}"),
                location_id=location,
            )
            booked = await self._step(ReturnStep.RECEIVE_IN_ERP, partial(self._receive_in_erp, receive))
            assert booked is not None
            self.ids["erp_item_receipt_ids"].append(booked.item_receipt.erp_id)
            where = f" into write-off location {location}" if location else ""
            self._done(ReturnStep.RECEIVE_IN_ERP, f"item receipt {booked.item_receipt.erp_id}: "
                       f"{sum(line.quantity for line in lines)} {condition.value} unit(s){where}")  # fmt: skip
            for line in lines:
                self.received[line.sku] = self.received.get(line.sku, 0) + line.quantity
                if condition is ItemCondition.DAMAGED:
                    self.damaged[line.sku] = self.damaged.get(line.sku, 0) + line.quantity
        self.processed.add(receipt.receipt_id)
        if self.received:
            self._set_status(ReturnStatus.RECEIVED if self._fully_received() else ReturnStatus.PARTIALLY_RECEIVED)
            # Once the first goods are in, settle the rest within the grace period, not the whole deadline.
            settle_by = workflow.now() + self.policy.partial_receipt_grace
            if self.receipt_deadline is None or settle_by < self.receipt_deadline:
                self.receipt_deadline = settle_by

    async def issue_credit(self) -> None:
        """Credit the customer in the ERP for everything received, with the channel's tax and the restocking fee."""
        assert self.order is not None
        authorization_id = self.ids["erp_return_authorization_id"]
        quote = self._quote()
        self.restocking_fee = quote.restocking_fee
        result = await self._step(
            ReturnStep.CREDIT,
            lambda: workflow.execute_activity_method(
                ReturnErpActivities.issue_return_credit,
                IssueReturnCreditInput(
                    erp_return_authorization_id=authorization_id,
                    external_id=return_step_key(self.key, "credit"),
                    method=self.policy.refund_method,
                    tax=quote.tax,
                    restocking_fee=quote.restocking_fee,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.credit = result.credit
        self.ids["erp_credit_id"] = result.credit.erp_credit_memo_id
        self._done(ReturnStep.CREDIT, f"{self.policy.refund_method.value} {result.credit.erp_credit_memo_id} "
                   f"for {result.credit.total}")  # fmt: skip
        self._set_status(ReturnStatus.CREDITED)

    async def refund(self) -> None:
        """Refund what the ERP credited (received units, their tax, less the fee) on the channel, exactly once."""
        quote = self._quote()
        request = RefundOnChannelInput(
            channel=self.request.channel,
            channel_order_id=channel_order_id_of(self.request.order_key),
            refund=quote.refund,
            idempotency_key=return_step_key(self.key, "refund"),
        )
        result = await self._step(
            ReturnStep.REFUND,
            lambda: workflow.execute_activity_method(
                ReturnChannelActivities.refund_on_channel,
                request,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.refund_total = result.refund.amount
        self.ids["channel_refund_id"] = result.refund.channel_refund_id
        fee = f", restocking fee {quote.restocking_fee}" if quote.restocking_fee.amount else ""
        self._done(ReturnStep.REFUND, f"refund {result.refund.channel_refund_id} for {result.refund.amount}{fee}")
        self._set_status(ReturnStatus.REFUNDED)
        if self.credit is not None and self.credit.total != result.refund.amount:
            # Both are made; finance must see a difference rather than find it at month end.
            self._raise_attention(
                ReturnStep.REFUND,
                f"the channel refunded {result.refund.amount} but the ERP credited {self.credit.total}",
                skippable=False,
                parked=False,
            )

    def _quote(self) -> RefundQuote:
        """The refund for what was received; after the credit, priced as the ERP credited it, with its fee."""
        assert self.order is not None
        return refund_for(
            self.order,
            self.received,
            restocking_fee_percent=self.policy.restocking_fee_percent,
            credit=self.credit,
            restocking_fee=self.restocking_fee,
            note=f"return {self.request.return_id}",
        )

    async def close(self) -> None:
        """Close what stays open: the rest of a partly received authorization, and the channel's return."""
        if not self._fully_received():
            result = await self._step(
                ReturnStep.CLOSE,
                lambda: workflow.execute_activity_method(
                    ReturnErpActivities.close_return_authorization,
                    self._authorization_ref(),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
                skippable=True,
            )
            self._done(ReturnStep.CLOSE, "rest of the return authorization closed" if result else "skipped by operator")
        if self._channel_return():
            closed = await self._step(
                ReturnStep.CLOSE,
                lambda: workflow.execute_activity_method(
                    ReturnChannelActivities.close_channel_return,
                    ChannelReturnInput(channel=self.request.channel, channel_return_id=self.request.return_id),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
                skippable=True,
            )
            self._done(ReturnStep.CLOSE, closed.detail if closed else "skipped by operator")

    async def _receive_in_erp(self, request: ReceiveReturnInput) -> ReceiveReturnResult:
        return await workflow.execute_activity_method(
            ReturnErpActivities.receive_return_in_erp,
            request,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    # -----------------------------------------------------------------------------------------
    # Compensations: each safe to repeat, each finding its record by the return's reference
    # -----------------------------------------------------------------------------------------

    def _authorization_ref(self) -> CloseReturnAuthorizationInput:
        assert self.erp is not None and self.erp.erp_order_id is not None
        return CloseReturnAuthorizationInput(
            erp_order_id=self.erp.erp_order_id, external_id=return_step_key(self.key, "ra")
        )

    async def _close_authorization(self) -> str | None:
        result = await workflow.execute_activity_method(
            ReturnErpActivities.close_return_authorization,
            self._authorization_ref(),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return "return authorization closed" if result.closed else "no return authorization created"

    async def _void_label(self) -> str | None:
        result = await workflow.execute_activity_method(
            ReturnCarrierActivities.void_return_label,
            VoidReturnLabelInput(reference=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return f"label refund {result.refund_status.value}" if result.refund_status else "no label bought"

    async def _cancel_wms_return(self) -> str | None:
        result = await workflow.execute_activity_method(
            ReturnWarehouseActivities.cancel_wms_return,
            CancelWmsReturnInput(reference=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return "warehouse return cancelled" if result.cancelled else "no warehouse return created"

    async def _unwind(self, request: CancelRequest) -> None:
        """Undo every step begun, newest first, then cancel the channel's return unless the channel asked."""
        self.cancel_request = request
        self._set_status(ReturnStatus.CANCELLING)
        if request.source is CancelSource.OPERATOR:
            # Who cancelled, beside why (the cancel reason), in the record of operators' choices.
            who = request.requested_by or "an unnamed operator"
            self.steps_done.append(self._record(OPERATOR_RECORD, f"cancel by {who}: {request.reason}"))
        self._clear_attention()
        await self.compensations.run_in_reverse(self._compensate)
        if self._channel_return() and request.source is not CancelSource.CHANNEL:
            step = ReturnCompensationStep.CANCEL_ON_CHANNEL
            result = await self._compensation_step(
                step,
                lambda: workflow.execute_activity_method(
                    ReturnChannelActivities.cancel_channel_return,
                    ChannelReturnInput(
                        channel=self.request.channel, channel_return_id=self.request.return_id, reason=request.reason
                    ),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
            )
            self.compensations_done.append(self._record(step.value, result.detail if result else "skipped by operator"))
        self._set_status(ReturnStatus.EXPIRED if request.source is CancelSource.DEADLINE else ReturnStatus.CANCELLED)

    async def _compensate(self, compensation: Compensation[ReturnCompensationStep]) -> None:
        detail = await self._compensation_step(compensation.step, compensation.undo)
        self.compensations_done.append(
            self._record(compensation.step.value, detail if detail is not None else "skipped by operator")
        )

    async def _compensation_step(self, step: ReturnCompensationStep, undo: Callable[[], Awaitable[T]]) -> T | None:
        """An undo that fails permanently parks the saga too; it is never silently dropped."""
        while True:
            self._flush_attributes()
            try:
                return await undo()
            except ActivityError as error:
                permanent, reason = failure_reason(error)
                if not permanent:
                    raise
                self._raise_attention(step.value, f"compensation failed: {reason}", skippable=True)
                await self._wait(lambda: self.operator_choice is not None)
                choice = self._take_operator_choice()
                self._clear_attention()
                if choice == "skip":
                    return None

    # -----------------------------------------------------------------------------------------
    # Parking, waiting, bookkeeping
    # -----------------------------------------------------------------------------------------

    async def _step(self, step: ReturnStep, call: Callable[[], Awaitable[T]], *, skippable: bool = False) -> T | None:
        """Run a step's activity; on a permanent failure park until an operator retries, skips or cancels."""
        self.current_step = step
        skippable = skippable and step in SKIPPABLE
        while True:
            self._raise_if_cancelled()
            self._flush_attributes()
            try:
                return await call()
            except ActivityError as error:
                permanent, reason = failure_reason(error)
                if not permanent:
                    raise
            self._raise_attention(step, reason, skippable=skippable)
            await self._wait(lambda: self.operator_choice is not None)
            choice = self._take_operator_choice()
            self._clear_attention()
            if choice == "skip":
                return None

    async def _wait(self, condition: Callable[[], bool], *, timeout: timedelta | None = None) -> bool:
        """Wait for a condition or a cancel; False if the timeout passed first. Cancels raise."""
        self._flush_attributes()
        try:
            await workflow.wait_condition(lambda: condition() or self._cancel_pending(), timeout=timeout)
        except TimeoutError:
            return False
        self._raise_if_cancelled()
        return True

    def _cancel_pending(self) -> bool:
        return self.cancel_request is not None and self.status is not ReturnStatus.CANCELLING

    def _raise_if_cancelled(self) -> None:
        if self._cancel_pending():
            assert self.cancel_request is not None
            raise ReturnCancelledError(self.cancel_request)

    def _raise_attention(self, step: ReturnStep | str, reason: str, *, skippable: bool, parked: bool = True) -> None:
        self.attention_step = step.value if isinstance(step, ReturnStep) else step
        self.attention_reason = reason
        self.parked_skippable = skippable if parked else False
        self.parked = parked
        workflow.logger.warning("return %s needs attention at %s: %s", self.key, self.attention_step, reason)
        self._stage(NEEDS_ATTENTION.value_set(True))

    def _clear_attention(self) -> None:
        if self.attention_reason is None:
            return
        self.attention_step = None
        self.attention_reason = None
        self.parked_skippable = False
        self.parked = False
        self._stage(NEEDS_ATTENTION.value_set(False))

    def _is_parked(self) -> bool:
        return self.parked and self.attention_reason is not None

    def _set_status(self, status: ReturnStatus) -> None:
        if status is self.status:
            return
        self.status = status
        self._stage(RETURN_STATUS.value_set(status.value))

    def _publish(self) -> None:
        """Make the saga findable even when whoever started it set no search attributes."""
        if workflow.info().typed_search_attributes.get(RETURN_STATUS) is not None:
            return
        for update in (
            RETURN_STATUS.value_set(self.status.value),
            CHANNEL.value_set(self.request.channel.value),
            NEEDS_ATTENTION.value_set(False),
        ):
            self._stage(update)

    def _stage(self, update: SearchAttributeUpdate[Any]) -> None:
        """Queue a search attribute change; the next flush sends every queued change as one upsert."""
        self.pending_attributes[update.key.name] = update

    def _flush_attributes(self) -> None:
        """One upsert (one history event) for all the changes since the last, just before the saga waits."""
        if self.pending_attributes:
            workflow.upsert_search_attributes(list(self.pending_attributes.values()))
            self.pending_attributes.clear()

    def _record(self, step: str, detail: str | None) -> StepRecord:
        return StepRecord(step=step, at=workflow.now().isoformat(), detail=detail)

    def _done(self, step: ReturnStep, detail: str | None) -> None:
        self.steps_done.append(self._record(step.value, detail))

    def _channel_return(self) -> bool:
        """Whether the channel holds a return of its own to keep in step (Shopify's returns)."""
        return self.input.origin is ReturnOrigin.CHANNEL and self.request.channel is Channel.SHOPIFY

    def _requested(self) -> dict[str, int]:
        return units_by_sku(self.request.lines)

    def _fully_received(self) -> bool:
        return all(self.received.get(sku, 0) >= qty for sku, qty in self._requested().items())

    def _unprocessed(self) -> list[ReturnReceipt]:
        return [r for r in self.receipts if r.receipt_id not in self.processed]

    def _accepted_lines(self, receipt: ReturnReceipt) -> tuple[list[ReturnLine], list[str]]:
        """A receipt's units that the return expects (capped at what is still due), and any others."""
        due = {sku: qty - self.received.get(sku, 0) for sku, qty in self._requested().items()}
        accepted: list[ReturnLine] = []
        unexpected: list[str] = []
        for line in receipt.lines:
            take = min(line.quantity, max(0, due.get(line.sku, 0)))
            if take:
                due[line.sku] -= take
                accepted.append(ReturnLine(sku=line.sku, quantity=take, condition=line.condition))
            if line.quantity > take:
                unexpected.append(f"{line.quantity - take} x {line.sku}")
        return accepted, unexpected

    # -----------------------------------------------------------------------------------------
    # Messages: signals for the Temporal UI and webhooks, updates for the CLI's accepted-or-why
    # -----------------------------------------------------------------------------------------

    def _cancel_refusal(self) -> str | None:
        if self.receipts:
            return f"return {self.key} has goods back in the warehouse; it continues to a refund"
        if self.status in TERMINAL:
            return f"return {self.key} is already {self.status.value}"
        if self.cancel_request is not None:
            return f"return {self.key} is already being cancelled ({self.cancel_request.reason})"
        return None

    def _choose(self, choice: str, command: OperatorCommand) -> None:
        self.operator_choice = choice
        self.operator_command = command

    def _take_operator_choice(self) -> str:
        """The operator's retry or skip, recorded in the steps done with who chose it and why."""
        choice, command = self.operator_choice, self.operator_command
        assert choice is not None and command is not None
        self.operator_choice, self.operator_command = None, None
        # Recorded as the parked step resumes, with the attention cleared in the same breath, so the
        # state (and the order view) changes at the same moments as before: stored histories replay.
        why = f": {command.note}" if command.note else ""
        self.steps_done.append(
            self._record(OPERATOR_RECORD, f"{choice} {self.attention_step} by {command.requested_by}{why}")
        )
        return choice

    def _operator_refusal(self, choice: str) -> str | None:
        if not self._is_parked():
            return f"return {self.key} is not parked (status {self.status.value})"
        if self.operator_choice is not None:
            return f"an operator already chose {self.operator_choice}"
        if choice == "skip" and not self.parked_skippable:
            return f"step {self.attention_step} cannot be skipped; retry it after fixing the data, or cancel"
        return None

    @workflow.signal(name=SIGNAL_CANCEL)
    def on_cancel(self, request: CancelRequest) -> None:
        """Cancel before any goods came back; refused (and recorded) after."""
        refusal = self._cancel_refusal()
        if refusal is not None:
            self.cancel_refusals.append(f"{request.source.value}: {refusal}")
            workflow.logger.warning("cancel of %s refused: %s", self.key, refusal)
            return
        self.cancel_request = request

    @workflow.update(name=UPDATE_CANCEL)
    def request_cancel(self, request: CancelRequest) -> ActionOutcome:
        """Cancel before receipt and say what will be undone; the validator refuses once goods are back."""
        self.cancel_request = request
        steps = ", ".join(step.value for step in reversed(self.compensations.steps)) or "nothing to undo"
        return ActionOutcome(accepted=True, message=f"cancelling {self.key}; undoing: {steps}")

    @request_cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        refusal = self._cancel_refusal()
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.signal(name=SIGNAL_RETRY)
    def on_retry(self, command: OperatorCommand) -> None:
        """Retry the parked step after fixing its data."""
        if self._operator_refusal("retry") is None:
            self._choose("retry", command)

    @workflow.update(name=UPDATE_RETRY)
    def request_retry(self, command: OperatorCommand) -> ActionOutcome:
        """Retry the parked step and say which."""
        step = self.attention_step
        self._choose("retry", command)
        return ActionOutcome(accepted=True, message=f"retrying {step} of {self.key}")

    @request_retry.validator
    def _validate_retry(self, command: OperatorCommand) -> None:
        refusal = self._operator_refusal("retry")
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.signal(name=SIGNAL_SKIP)
    def on_skip(self, command: OperatorCommand) -> None:
        """Skip the parked step, where the step allows it."""
        if self._operator_refusal("skip") is None:
            self._choose("skip", command)

    @workflow.update(name=UPDATE_SKIP)
    def request_skip(self, command: OperatorCommand) -> ActionOutcome:
        """Skip the parked step and say which."""
        step = self.attention_step
        self._choose("skip", command)
        return ActionOutcome(accepted=True, message=f"skipping {step} of {self.key}")

    @request_skip.validator
    def _validate_skip(self, command: OperatorCommand) -> None:
        refusal = self._operator_refusal("skip")
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.signal(name=SIGNAL_RETURN_RECEIVED)
    def on_return_received(self, message: ReturnReceived) -> None:
        """Record a receipt the warehouse reported; a repeated delivery of the same receipt is ignored."""
        receipt = message.receipt
        if any(r.receipt_id == receipt.receipt_id for r in self.receipts):
            return
        known = self.ids.get("wms_return_id")
        if known is not None and receipt.wms_return_id != known:
            workflow.logger.warning("receipt %s is for WMS return %s, not %s (return %s); ignored",
                                    receipt.receipt_id, receipt.wms_return_id, known, self.key)  # fmt: skip
            return
        if self.status in (ReturnStatus.CANCELLING, ReturnStatus.CANCELLED, ReturnStatus.EXPIRED):
            # Goods came back for a return being undone: a person must decide what to do with them.
            self._raise_attention(ReturnStep.AWAIT_RECEIPT,
                                  f"receipt {receipt.receipt_id} arrived after the return was {self.status.value}",
                                  skippable=False, parked=False)  # fmt: skip
            self._flush_attributes()
            return
        if self.cancel_request is not None:
            # The goods beat the cancel: they are here now, so the return goes on to its refund.
            self.cancel_refusals.append(f"{self.cancel_request.source.value}: goods arrived before the cancel")
            self.cancel_request = None
        self.receipts.append(receipt)

    @workflow.query(name=QUERY_STATUS)
    def state(self) -> ReturnSagaState:
        """Everything known about the return: status, steps, ids, units requested and received, money."""
        return ReturnSagaState(
            key=self.key,
            channel=self.request.channel.value,
            return_id=self.request.return_id,
            order_key=self.request.order_key,
            origin=self.input.origin,
            status=self.status,
            current_step=self.current_step,
            steps_done=list(self.steps_done),
            compensations_done=list(self.compensations_done),
            ids=ReturnSystemIds(**self.ids),
            lines_requested=self._requested(),
            lines_received=dict(self.received),
            lines_damaged=dict(self.damaged),
            receipt_ids=[r.receipt_id for r in self.receipts],
            refusal_reasons=list(self.refusal_reasons),
            receipt_deadline=self.receipt_deadline,
            erp_credit_total=self.credit.total if self.credit else None,
            refund_total=self.refund_total,
            restocking_fee=self.restocking_fee,
            needs_attention=self.attention_reason is not None,
            attention_reason=self.attention_reason,
            attention_step=self.attention_step,
            cancel_reason=self.cancel_request.reason if self.cancel_request else None,
        )
