"""Order to cash: the saga that takes an accepted order to an invoice, or undoes exactly what it did.

It reads like the table in DESIGN.md §4: accept, credit check, allocate, post to the ERP, buy the
label, release to the warehouse, await shipment, confirm, invoice. Each step that changes another
system registers its compensation before it runs. A permanent failure parks the saga with
`NeedsAttention` until an operator retries, skips (where the step allows) or cancels; a cancel
before the first shipment runs the compensations in reverse. Once part has shipped, a cancel
cancels what has not shipped in the warehouse and the ERP, and the shipped part is confirmed,
invoiced and completed (behind the `partial-cancel` patch); once all has shipped it is refused.

Workflow code only decides. Every side effect is an activity; time is `workflow.now()`; the
business deadlines (credit hold, backorder, shipment SLA) are durable timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from orderflow import metrics
    from orderflow.activities.carrier import CarrierActivities
    from orderflow.activities.channel import ChannelActivities
    from orderflow.activities.erp import ErpActivities
    from orderflow.activities.order_view import OrderViewActivities
    from orderflow.activities.warehouse import WarehouseActivities
    from orderflow.canonical import AllocationStatus, Label, Order, Parcel, PaymentTerms, Shipment
    from orderflow.canonical.fulfillment import Allocation, CancellationOutcome
    from orderflow.canonical.saga import (
        OPERATOR_RECORD,
        QUERY_STATUS,
        SIGNAL_APPROVE_CREDIT,
        SIGNAL_CANCEL,
        SIGNAL_DELIVERY_RECORDED,
        SIGNAL_RETRY,
        SIGNAL_SHIPMENT_CONFIRMED,
        SIGNAL_SKIP,
        SIGNAL_STOCK_AVAILABLE,
        UPDATE_APPROVE_CREDIT,
        UPDATE_CANCEL,
        UPDATE_RETRY,
        UPDATE_SKIP,
        AcceptOrderInput,
        AcceptOrderResult,
        ActionOutcome,
        AllocateInput,
        BuyLabelInput,
        CancelFulfillmentOrderInput,
        CancelOnChannelInput,
        CancelRequest,
        CancelSource,
        CancelUnshippedLinesInput,
        CloseSalesOrderInput,
        CloseUnshippedLinesInput,
        CompensationStep,
        ConfirmShipmentInput,
        ConfirmShipmentOnChannelResult,
        CreditApproval,
        CreditCheckInput,
        CreditDecision,
        DeliveryRecorded,
        InvoiceOrderInput,
        OperatorCommand,
        OrderSagaState,
        OrderStatus,
        OrderToCashInput,
        OrderToCashResult,
        OrderViewUpdate,
        PostSalesOrderInput,
        ReleaseAllocationInput,
        ReleaseToWarehouseInput,
        SagaStep,
        ShipmentConfirmed,
        StepRecord,
        StockAvailable,
        SystemIds,
        VoidLabelInput,
        idempotency_key,
        order_reference,
    )
    from orderflow.temporal import CHANNEL, CUSTOMER_ID, NEEDS_ATTENTION, ORDER_STATUS, ORDER_TOTAL, TRACKING_NUMBERS
    from orderflow.workflows.availability import AvailabilityPublications
    from orderflow.workflows.compensation import Compensation, Compensations

T = TypeVar("T")

# Transient failures (5xx, 429, timeouts) are retried for as long as it takes, backing off to a
# minute; permanent ones are raised non-retryable by the activities and park the saga instead.
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                             maximum_interval=timedelta(minutes=1))  # fmt: skip
ACTIVITY_TIMEOUT = timedelta(seconds=60)

# The order view is bookkeeping: a few quick tries, then the saga moves on. Every update carries the
# whole state, so the next transition catches the view up; a view must never hold up or park an order.
ORDER_VIEW_PATCH = "order-view"
ORDER_VIEW_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                               maximum_interval=timedelta(seconds=1), maximum_attempts=3)  # fmt: skip
ORDER_VIEW_TIMEOUT = timedelta(seconds=5)

# Sagas begun before partial cancellation keep refusing every cancel after a shipment, as they did.
PARTIAL_CANCEL_PATCH = "partial-cancel"

# Steps an operator may skip: the order can go on without them and a person can do them by hand.
SKIPPABLE = frozenset({SagaStep.BUY_LABEL, SagaStep.CONFIRM, SagaStep.INVOICE})
TERMINAL = frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED})

# Sagas begun before it accepted a retry or skip during a credit hold, which nothing read until a
# later step parked and was then "retried" with nobody asking; newer sagas refuse it.
CREDIT_HOLD_GUARD_PATCH = "credit-hold-refuses-retry"

# Parcel sizing: packaging weight and box sizes (inches) by total weight tier (ounces).
PACKAGING_OZ = Decimal(4)
DEFAULT_ITEM_OZ = Decimal(16)
BOXES = ((Decimal(16), (9, 6, 3)), (Decimal(80), (12, 10, 6)), (Decimal(400), (18, 14, 10)))
LARGEST_BOX = (24, 18, 18)


class OrderCancelledError(Exception):
    """Raised inside the saga when a cancel has been accepted; unwinds to the compensations."""

    def __init__(self, request: CancelRequest) -> None:
        super().__init__(request.reason)
        self.request = request


def parcel_for(order: Order, weights_oz: dict[str, Decimal]) -> Parcel:
    """The box an order ships in: its items' weight plus packaging, in the smallest box that fits the tier."""
    weight = PACKAGING_OZ + sum(
        (weights_oz.get(line.sku, DEFAULT_ITEM_OZ) * line.quantity for line in order.lines if line.requires_shipping),
        Decimal(0),
    )
    dims = next((box for limit, box in BOXES if weight <= limit), LARGEST_BOX)
    return Parcel(length_in=Decimal(dims[0]), width_in=Decimal(dims[1]), height_in=Decimal(dims[2]), weight_oz=weight)


def failure_reason(error: ActivityError) -> tuple[bool, str]:
    """Whether an activity failure is permanent, and the reason an operator should read."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        kind = cause.type or "ApplicationError"
        return cause.non_retryable, f"{kind}: {cause.message}"
    return False, str(cause or error)


@workflow.defn(name="OrderToCash")
class OrderToCash:
    """One order's journey from acceptance to invoice, with its compensations."""

    @workflow.init
    def __init__(self, input: OrderToCashInput) -> None:
        self.input = input
        self.order = input.order
        self.reference = order_reference(self.order.key)
        self.status = OrderStatus.RECEIVED
        self.current_step: SagaStep | None = None
        self.steps_done: list[StepRecord] = []
        self.compensations_done: list[StepRecord] = []
        self.ids: dict[str, Any] = {"tracking_numbers": [], "channel_fulfillment_ids": [], "erp_fulfillment_ids": []}
        self.compensations: Compensations[CompensationStep] = Compensations()
        self.attention_reason: str | None = None
        self.attention_step: str | None = None
        self.parked_skippable = False
        # Parked: waiting for an operator's retry/skip/cancel (an SLA warning raises attention without parking).
        self.parked = False
        self.cancel_request: CancelRequest | None = None
        self.cancel_refusals: list[str] = []
        # A cancel accepted once part has shipped: what has not shipped is cancelled, the rest goes on.
        self.partial_cancel_allowed = False  # decided by the patch when the saga starts
        self.credit_hold_guarded = False  # likewise
        self.partial_cancel: CancelRequest | None = None
        self.partial_cancel_running = False
        self.partial_cancel_done = False
        self.lines_cancelled: dict[str, int] = {}
        self.credit_approval: CreditApproval | None = None
        self.operator_choice: str | None = None
        # Who chose it and why: recorded in the steps done when the parked step resumes.
        self.operator_command: OperatorCommand | None = None
        self.stock_signalled = False
        self.shipments: dict[str, Shipment] = {}
        self.confirmed_shipments: set[str] = set()
        self.delivered = False
        self.accepted: AcceptOrderResult | None = None
        self.allocation: Allocation | None = None
        self.label: Label | None = None
        self.erp_order_id: str | None = None
        # Search attribute changes waiting to be sent: one upsert per workflow task keeps history lean.
        self.pending_attributes: dict[str, SearchAttributeUpdate[Any]] = {}
        # The order view: the last state sent, its version (the transition counter), and whether it is in flight.
        self.view_state: OrderSagaState | None = None
        self.view_version = 0
        self.view_in_flight = False
        self.availability = AvailabilityPublications()

    # -----------------------------------------------------------------------------------------
    # The saga
    # -----------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OrderToCashInput) -> OrderToCashResult:
        """Take the order through every step; on cancel or deadline, compensate in reverse."""
        self._publish()
        metrics.order_started(self.order.channel.value)
        view = self._start_order_view()
        self.partial_cancel_allowed = workflow.patched(PARTIAL_CANCEL_PATCH)
        self.credit_hold_guarded = workflow.patched(CREDIT_HOLD_GUARD_PATCH)
        # After stock moves, the channels hear what is left (workflows/availability.py).
        self.availability.start()
        try:
            await self.accept()
            await self.check_credit()
            await self.allocate()
            await self.post_to_erp()
            await self.buy_label()
            await self.release()
            await self.await_shipment_and_confirm()
            await self.invoice()
            self._complete()
        except OrderCancelledError as cancelled:
            await self._unwind(cancelled.request)
        except asyncio.CancelledError:
            # Cancelled from the Temporal UI or `temporal workflow cancel`: same meaning as an
            # operator's cancel, and the same rule: nothing to undo once goods have shipped, and
            # (with partial cancellation) what has not shipped is cancelled and the rest completes.
            request = CancelRequest(reason="cancelled through Temporal", source=CancelSource.OPERATOR)
            if self.shipments:
                if not self._partly_cancellable() and self.partial_cancel is None:
                    raise
                if self.partial_cancel is None:
                    self.partial_cancel = request
                await self.await_shipment_and_confirm()
                await self.invoice()
                self._complete()
            else:
                await self._unwind(request)
        # The channels hear what the last reservation or release left before the saga ends.
        await self.availability.settled()
        self._flush_attributes()
        if view is not None:
            # The view must show how the saga ended before the saga ends.
            await workflow.wait_condition(lambda: not self.view_in_flight and self.view_state == self.state())
            view.cancel()
        return OrderToCashResult(key=self.order.key, status=self.status, state=self.state())

    async def accept(self) -> None:
        """Validate the order against master data and match its customer in the ERP."""
        customer = self.order.customer
        external = customer.channel_customer_id or customer.email or self.order.key
        accepted = await self._step(
            SagaStep.ACCEPT,
            lambda: workflow.execute_activity_method(
                ErpActivities.accept_order,
                AcceptOrderInput(
                    order=self.order, customer_external_id=f"{self.order.channel.value}-customer-{external}"
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert accepted is not None  # accept is not skippable
        self.accepted = accepted
        self.ids["erp_customer_id"] = accepted.erp_customer_id
        self._stage(CUSTOMER_ID.value_set(accepted.erp_customer_id))
        self._done(SagaStep.ACCEPT, f"ERP customer {accepted.erp_customer_id}, {accepted.terms.value}")
        self._set_status(OrderStatus.ACCEPTED)

    async def check_credit(self) -> None:
        """Terms customers need available credit; a shortfall holds the order for an operator."""
        assert self.accepted is not None
        if self.accepted.terms is PaymentTerms.PREPAID:
            self._done(SagaStep.CREDIT_CHECK, "prepaid on the channel")
            self._set_status(OrderStatus.CREDIT_APPROVED)
            return
        check = CreditCheckInput(erp_customer_id=self.accepted.erp_customer_id, order_total=self.order.total)
        result = await self._step(
            SagaStep.CREDIT_CHECK,
            lambda: workflow.execute_activity_method(
                ErpActivities.check_credit,
                check,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        if result.decision is CreditDecision.HOLD:
            self._set_status(OrderStatus.CREDIT_HOLD)
            self._raise_attention(SagaStep.CREDIT_CHECK, f"credit hold: {result.reason}", skippable=False)
            approved = await self._wait(
                lambda: self.credit_approval is not None, timeout=self.input.timeouts.credit_hold
            )
            self._clear_attention()
            if not approved:
                raise OrderCancelledError(
                    CancelRequest(
                        reason=f"credit hold not released within {self.input.timeouts.credit_hold}",
                        source=CancelSource.DEADLINE,
                    )
                )
            assert self.credit_approval is not None
            why = f": {self.credit_approval.note}" if self.credit_approval.note else ""
            self._done(SagaStep.CREDIT_CHECK, f"approved by {self.credit_approval.approved_by} after hold{why}")
        else:
            self._done(SagaStep.CREDIT_CHECK, result.reason)
        self._set_status(OrderStatus.CREDIT_APPROVED)

    async def allocate(self) -> None:
        """Reserve stock; when there is not enough, wait for stock (signal or re-check) until the deadline."""
        self.compensations.register(CompensationStep.RELEASE_ALLOCATION, self._release_allocation)
        deadline = workflow.now() + self.input.timeouts.backorder
        while True:
            result = await self._step(
                SagaStep.ALLOCATE,
                lambda: workflow.execute_activity_method(
                    WarehouseActivities.allocate,
                    AllocateInput(reference=self.reference, order=self.order),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
            )
            assert result is not None
            if result.allocation.status is AllocationStatus.ALLOCATED:
                self.allocation = result.allocation
                self.ids["allocation_reference"] = self.reference
                warehouses = sorted({line.warehouse_id for line in result.allocation.lines})
                self._done(SagaStep.ALLOCATE, f"reserved in warehouse {', '.join(warehouses)}")
                self._set_status(OrderStatus.ALLOCATED)
                self.availability.publish(self._lines_ordered())
                return
            if result.allocation.status is AllocationStatus.PARTIAL:
                # Half a reservation would hold stock other orders could ship; give it back while waiting.
                await self._release_allocation()
            self._set_status(OrderStatus.BACKORDERED)
            short = [f"{line.sku} short {line.shortfall}" for line in result.allocation.lines if line.shortfall]
            remaining = deadline - workflow.now()
            if remaining <= timedelta(0):
                raise OrderCancelledError(
                    CancelRequest(
                        reason=f"backordered past the {self.input.timeouts.backorder} deadline: {', '.join(short)}",
                        source=CancelSource.DEADLINE,
                    )
                )
            self.stock_signalled = False
            await self._wait(
                lambda: self.stock_signalled, timeout=min(remaining, self.input.timeouts.backorder_recheck)
            )

    async def post_to_erp(self) -> None:
        """Upsert the sales order in the ERP by its external id."""
        assert self.accepted is not None
        external_id = self.reference
        self.ids["erp_external_id"] = external_id
        self.compensations.register(CompensationStep.CLOSE_SALES_ORDER, self._close_sales_order)
        accepted = self.accepted
        # The WMS's warehouse ids are not the ERP's location ids; until the warehouse-to-location
        # cross-reference exists (master data, issue 4), the ERP applies its default location.
        location = None
        result = await self._step(
            SagaStep.POST_TO_ERP,
            lambda: workflow.execute_activity_method(
                ErpActivities.post_sales_order,
                PostSalesOrderInput(
                    order=self.order,
                    external_id=external_id,
                    erp_customer_id=accepted.erp_customer_id,
                    item_ids=accepted.item_ids,
                    location_id=location,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.erp_order_id = result.sales_order.erp_order_id
        self.ids["erp_order_id"] = self.erp_order_id
        self._done(SagaStep.POST_TO_ERP, f"sales order {self.erp_order_id}")
        metrics.order_posted_to_erp(self.order.channel.value, self.input.received_at_epoch_ms)
        self._set_status(OrderStatus.POSTED)

    async def buy_label(self) -> None:
        """Rate-shop and buy the shipping label (skippable: the warehouse can buy its own)."""
        assert self.accepted is not None and self.allocation is not None
        self.compensations.register(CompensationStep.VOID_LABEL, self._void_label)
        parcel = parcel_for(self.order, self.accepted.item_weights_oz)
        warehouse = self.allocation.lines[0].warehouse_id if self.allocation.lines else None
        result = await self._step(
            SagaStep.BUY_LABEL,
            lambda: workflow.execute_activity_method(
                CarrierActivities.buy_label,
                BuyLabelInput(
                    reference=self.reference,
                    ship_from_warehouse_id=warehouse,
                    ship_to=self.order.ship_to,
                    parcel=parcel,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        if result is None:
            self._done(SagaStep.BUY_LABEL, "skipped by operator: the warehouse buys the label")
        else:
            self.label = result.label
            self.ids["carrier_shipment_id"] = result.label.carrier_shipment_id
            self._add_tracking(result.label.tracking_number)
            self._done(SagaStep.BUY_LABEL, f"{result.label.rate.carrier} {result.label.tracking_number}")
        self._set_status(OrderStatus.LABELLED)

    async def release(self) -> None:
        """Create the fulfillment order in the warehouse, with the label, from the reservation."""
        assert self.allocation is not None
        self.compensations.register(CompensationStep.CANCEL_FULFILLMENT_ORDER, self._cancel_fulfillment_order)
        allocation = self.allocation
        result = await self._step(
            SagaStep.RELEASE,
            lambda: workflow.execute_activity_method(
                WarehouseActivities.release_to_warehouse,
                ReleaseToWarehouseInput(
                    reference=self.reference, order=self.order, allocation=allocation, label=self.label
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
        )
        assert result is not None
        self.ids["wms_order_id"] = result.fulfillment_order.wms_order_id
        self._done(SagaStep.RELEASE, f"WMS order {result.fulfillment_order.wms_order_id}")
        self._set_status(OrderStatus.RELEASED)

    async def await_shipment_and_confirm(self) -> None:
        """Wait for the warehouse to ship every line, confirming each shipment as it comes."""
        self.current_step = SagaStep.AWAIT_SHIPMENT
        sla_deadline = workflow.now() + self.input.timeouts.shipment_sla
        while not self._fully_shipped() or self._unconfirmed():
            if self._partial_cancel_due():
                await self.cancel_unshipped()
                continue
            pending = self._unconfirmed()
            if pending:
                for shipment in pending:
                    await self.confirm(shipment)
                continue
            remaining = sla_deadline - workflow.now()
            if remaining > timedelta(0):
                arrived = await self._wait(
                    lambda: bool(self._unconfirmed()) or self._partial_cancel_due(), timeout=remaining
                )
                if not arrived and not self._unconfirmed():
                    self._raise_attention(
                        SagaStep.AWAIT_SHIPMENT,
                        f"no shipment within the {self.input.timeouts.shipment_sla} SLA; still waiting",
                        skippable=False,
                        parked=False,
                    )
            else:
                await self._wait(lambda: bool(self._unconfirmed()) or self._partial_cancel_due())
        self._done(SagaStep.AWAIT_SHIPMENT, f"{len(self.shipments)} shipment(s)")
        self._set_status(OrderStatus.FULFILLED)

    async def confirm(self, shipment: Shipment) -> None:
        """Send one shipment's tracking to the channel and record its item fulfillment in the ERP."""
        assert self.erp_order_id is not None
        if self.attention_step == SagaStep.AWAIT_SHIPMENT.value:
            self._clear_attention()
        request = ConfirmShipmentInput(
            order=self.order,
            shipment=shipment,
            erp_order_id=self.erp_order_id,
            erp_external_id=self.ids["erp_external_id"],
        )
        detail = f"shipment {shipment.shipment_id} ({shipment.tracking.number})"
        on_channel = await self._step(SagaStep.CONFIRM, lambda: self._confirm_on_channel(request), skippable=True)
        if on_channel is not None:
            self.ids["channel_fulfillment_ids"].append(on_channel.channel_fulfillment_id)
            metrics.shipment_confirmed_on_channel(self.order.channel.value, shipment.shipped_at)
        elif self._channel_cancelled():
            detail += "; not sent to the channel, which cancelled the order"
        in_erp = await self._step(
            SagaStep.CONFIRM,
            lambda: workflow.execute_activity_method(
                ErpActivities.record_fulfillment,
                request,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        if in_erp is not None:
            self.ids["erp_fulfillment_ids"].append(in_erp.fulfillment.erp_id)
        self.confirmed_shipments.add(shipment.shipment_id)
        self._done(SagaStep.CONFIRM, detail)
        self.current_step = SagaStep.AWAIT_SHIPMENT

    async def _confirm_on_channel(self, request: ConfirmShipmentInput) -> ConfirmShipmentOnChannelResult | None:
        if self._channel_cancelled():
            # The channel cancelled the order itself, and a cancelled order takes no fulfillment there.
            # Checked at each try, so a confirmation parked when the cancel came needs no operator.
            return None
        return await workflow.execute_activity_method(
            ChannelActivities.confirm_shipment_on_channel,
            request,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )

    async def cancel_unshipped(self) -> None:
        """A partly shipped order cancelled: cancel what has not shipped in the warehouse, then close it in the ERP.

        The units are those not shipped when the step starts; the warehouse says which it really
        cancelled (a parcel may leave meanwhile), and only those are closed in the ERP. Either
        half may be skipped by an operator who did it by hand. Afterwards the saga waits only for
        what is still to ship, then confirms and invoices what shipped.
        """
        request = self.partial_cancel
        assert request is not None
        self.partial_cancel_running = True
        try:
            ordered, shipped = self._lines_ordered(), self._lines_shipped()
            unshipped = {sku: qty - shipped.get(sku, 0) for sku, qty in ordered.items() if qty > shipped.get(sku, 0)}
            in_wms = "nothing to cancel"
            cancelled: dict[str, int] = {}
            if unshipped:
                result = await self._step(
                    SagaStep.CANCEL_UNSHIPPED,
                    lambda: workflow.execute_activity_method(
                        WarehouseActivities.cancel_unshipped_lines,
                        CancelUnshippedLinesInput(reference=self.reference, quantities=unshipped),
                        start_to_close_timeout=ACTIVITY_TIMEOUT,
                        retry_policy=ACTIVITY_RETRY,
                    ),
                    skippable=True,
                )
                # Skipped: the operator cancelled them in the warehouse by hand.
                in_wms = "done" if result is not None else "skipped by operator"
                cancelled = {sku: qty for sku, qty in (result.cancelled if result else unshipped).items() if qty > 0}
            in_erp = "nothing to close"
            if cancelled:
                closed = await self._step(
                    SagaStep.CANCEL_UNSHIPPED,
                    lambda: workflow.execute_activity_method(
                        ErpActivities.close_unshipped_lines,
                        CloseUnshippedLinesInput(external_id=self.reference, quantities=cancelled),
                        start_to_close_timeout=ACTIVITY_TIMEOUT,
                        retry_policy=ACTIVITY_RETRY,
                    ),
                    skippable=True,
                )
                in_erp = "done" if closed is not None else "skipped by operator"
            self.lines_cancelled = cancelled
            self.partial_cancel_done = True
            # The units the warehouse cancelled are free to sell again.
            self.availability.publish(cancelled)
        finally:
            self.partial_cancel_running = False
        units = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(cancelled.items())) or "nothing"
        self._done(
            SagaStep.CANCEL_UNSHIPPED,
            f"cancelled {units} (WMS {in_wms}, ERP {in_erp}); {request.source.value}: {request.reason}",
        )
        if self.status is OrderStatus.PARTIALLY_SHIPPED and self._fully_shipped():
            self._set_status(OrderStatus.SHIPPED)
        self.current_step = SagaStep.AWAIT_SHIPMENT

    async def invoice(self) -> None:
        """Bill the sales order for what shipped (skippable: finance can invoice by hand)."""
        assert self.erp_order_id is not None
        erp_order_id = self.erp_order_id
        result = await self._step(
            SagaStep.INVOICE,
            lambda: workflow.execute_activity_method(
                ErpActivities.invoice_order,
                InvoiceOrderInput(erp_order_id=erp_order_id, external_id=idempotency_key(self.order.key, "invoice")),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            ),
            skippable=True,
        )
        if result is not None:
            self.ids["erp_invoice_id"] = result.invoice.erp_invoice_id
            self._done(SagaStep.INVOICE, f"invoice {result.invoice.erp_invoice_id} for {result.invoice.total}")
        else:
            self._done(SagaStep.INVOICE, "skipped by operator")

    def _complete(self) -> None:
        """The order is done; after a partial cancel, say what a person must still settle on the channel."""
        request = self.partial_cancel
        if request is not None and request.source is CancelSource.CHANNEL:
            shipped = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(self._lines_shipped().items()))
            self._raise_attention(SagaStep.CANCEL_UNSHIPPED,
                                  f"the channel cancelled {self.order.key} after part of it shipped: the shipped "
                                  f"lines ({shipped}) are invoiced here; check what the channel refunded for them",
                                  skippable=False, parked=False)  # fmt: skip
        elif request is not None and self.lines_cancelled:
            # Shopify refuses to cancel a partly fulfilled order; the unshipped lines are refunded there instead.
            units = ", ".join(f"{sku} x{qty}" for sku, qty in sorted(self.lines_cancelled.items()))
            self._raise_attention(SagaStep.CANCEL_UNSHIPPED,
                                  f"the channel still holds the cancelled lines ({units}): it does not cancel a "
                                  "partly fulfilled order, so refund them there with restock",
                                  skippable=False, parked=False)  # fmt: skip
        self._set_status(OrderStatus.COMPLETED)

    # -----------------------------------------------------------------------------------------
    # Compensations: each safe to repeat, each finding its record by the order's reference
    # -----------------------------------------------------------------------------------------

    async def _release_allocation(self) -> str | None:
        result = await workflow.execute_activity_method(
            WarehouseActivities.release_allocation,
            ReleaseAllocationInput(reference=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if result.released:
            self.availability.publish(self._lines_ordered())
        return "reservation released" if result.released else "no reservation held"

    async def _close_sales_order(self) -> str | None:
        result = await workflow.execute_activity_method(
            ErpActivities.close_sales_order,
            CloseSalesOrderInput(external_id=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return "sales order closed" if result.closed else "no sales order posted"

    async def _void_label(self) -> str | None:
        result = await workflow.execute_activity_method(
            CarrierActivities.void_label,
            VoidLabelInput(reference=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return f"label refund {result.refund_status.value}" if result.refund_status else "no label bought"

    async def _cancel_fulfillment_order(self) -> str | None:
        result = await workflow.execute_activity_method(
            WarehouseActivities.cancel_fulfillment_order,
            CancelFulfillmentOrderInput(reference=self.reference),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        if result.outcome is CancellationOutcome.REFUSED:
            # Data, not an exception, from the activity; for the saga it is a failed undo.
            raise ApplicationError(
                f"the warehouse refused to cancel: {result.reason}", type="CancellationRefused", non_retryable=True
            )
        return "fulfillment order cancelled" if result.outcome else "no fulfillment order released"

    async def _unwind(self, request: CancelRequest) -> None:
        """Run the compensations of every step begun, newest first, then tell the channel."""
        self.cancel_request = request
        self._set_status(OrderStatus.CANCELLING)
        if request.source is CancelSource.OPERATOR:
            # Who cancelled, beside why (the cancel reason), in the record of operators' choices.
            who = request.requested_by or "an unnamed operator"
            self.steps_done.append(self._record(OPERATOR_RECORD, f"cancel by {who}: {request.reason}"))
        self._clear_attention()
        await self.compensations.run_in_reverse(self._compensate)
        if request.source is not CancelSource.CHANNEL:
            result = await self._compensation_step(
                CompensationStep.CANCEL_ON_CHANNEL,
                lambda: workflow.execute_activity_method(
                    ChannelActivities.cancel_on_channel,
                    CancelOnChannelInput(order=self.order, reason=request.reason),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY,
                ),
            )
            detail = (result.detail or "cancelled on the channel") if result is not None else "skipped by operator"
            self.compensations_done.append(self._record(CompensationStep.CANCEL_ON_CHANNEL.value, detail))
        self._set_status(OrderStatus.CANCELLED)

    async def _compensate(self, compensation: Compensation[CompensationStep]) -> None:
        detail = await self._compensation_step(compensation.step, compensation.undo)
        self.compensations_done.append(
            self._record(compensation.step.value, detail if detail is not None else "skipped by operator")
        )

    async def _compensation_step(self, step: CompensationStep, undo: Callable[[], Awaitable[T]]) -> T | None:
        """An undo that fails permanently parks the saga too; it is never silently dropped."""
        while True:
            self._flush_attributes()
            try:
                return await undo()
            except (ActivityError, ApplicationError) as error:
                if isinstance(error, ActivityError):
                    permanent, reason = failure_reason(error)
                    if not permanent:
                        raise
                else:
                    reason = f"{error.type}: {error.message}"
                self._raise_attention(step.value, f"compensation failed: {reason}", skippable=True)
                await self._wait(lambda: self.operator_choice is not None)
                choice = self._take_operator_choice()
                self._clear_attention()
                if choice == "skip":
                    return None

    # -----------------------------------------------------------------------------------------
    # Parking, waiting, bookkeeping
    # -----------------------------------------------------------------------------------------

    async def _step(self, step: SagaStep, call: Callable[[], Awaitable[T]], *, skippable: bool = False) -> T | None:
        """Run a step's activity; on a permanent failure park until an operator retries, skips or cancels."""
        while True:
            self.current_step = step
            self._raise_if_cancelled()
            self._flush_attributes()
            try:
                return await call()
            except ActivityError as error:
                permanent, reason = failure_reason(error)
                if not permanent:
                    raise
            self._raise_attention(step, reason, skippable=skippable)
            await self._wait(lambda: self.operator_choice is not None or self._partial_cancel_due())
            if self.operator_choice is None:
                # A cancel of what has not shipped came while this step was parked: stop the
                # warehouse now rather than after the operator, then try this step again.
                self._clear_attention()
                await self.cancel_unshipped()
                continue
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
        return self.cancel_request is not None and self.status is not OrderStatus.CANCELLING

    def _raise_if_cancelled(self) -> None:
        if self._cancel_pending():
            assert self.cancel_request is not None
            raise OrderCancelledError(self.cancel_request)

    def _raise_attention(self, step: SagaStep | str, reason: str, *, skippable: bool, parked: bool = True) -> None:
        self.attention_step = step.value if isinstance(step, SagaStep) else step
        self.attention_reason = reason
        self.parked_skippable = skippable if parked else False
        self.parked = parked
        if parked:
            metrics.order_parked(self.order.channel.value, self.attention_step)
        workflow.logger.warning("order %s needs attention at %s: %s", self.order.key, self.attention_step, reason)
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

    def _set_status(self, status: OrderStatus) -> None:
        if status is self.status:
            return
        self.status = status
        metrics.order_status_changed(self.order.channel.value, status.value)
        self._stage(ORDER_STATUS.value_set(status.value))

    def _publish(self) -> None:
        """Make the saga findable even when whoever started it set no search attributes."""
        if workflow.info().typed_search_attributes.get(ORDER_STATUS) is not None:
            return  # the webhook service and the CLI start sagas with them already set
        for update in (
            ORDER_STATUS.value_set(self.status.value),
            CHANNEL.value_set(self.order.channel.value),
            NEEDS_ATTENTION.value_set(False),
            ORDER_TOTAL.value_set(float(self.order.total.amount)),
        ):
            self._stage(update)

    def _start_order_view(self) -> asyncio.Task[None] | None:
        """Keep the order view current from here on; sagas begun before the view existed replay without it."""
        if not workflow.patched(ORDER_VIEW_PATCH):
            return None
        return asyncio.create_task(self._keep_order_view())

    async def _keep_order_view(self) -> None:
        """Record the state whenever it changed: once per workflow task at most, the newest state winning."""
        while True:
            # Checked after the saga's coroutines have run, so transitions made together are sent together.
            await workflow.wait_condition(lambda: self.view_state != self.state())
            state = self.state()
            self.view_state = state
            self.view_version += 1
            self.view_in_flight = True
            try:
                await workflow.execute_local_activity_method(
                    OrderViewActivities.record_order_view,
                    OrderViewUpdate(
                        version=self.view_version,
                        at=workflow.now(),
                        channel_order_id=self.order.channel_order_id,
                        channel_customer_id=self.order.customer.channel_customer_id,
                        order_total=self.order.total,
                        state=state,
                    ),
                    start_to_close_timeout=ORDER_VIEW_TIMEOUT,
                    retry_policy=ORDER_VIEW_RETRY,
                )
            except FailureError as error:
                # A local activity's last failure can arrive unwrapped (an ApplicationError, a TimeoutError).
                workflow.logger.warning(
                    "order view of %s not updated to version %d (%s); the next transition catches it up",
                    self.order.key, self.view_version, error.cause or error,
                )  # fmt: skip
            finally:
                self.view_in_flight = False

    def _stage(self, update: SearchAttributeUpdate[Any]) -> None:
        """Queue a search attribute change; the next flush sends every queued change as one upsert."""
        self.pending_attributes[update.key.name] = update

    def _flush_attributes(self) -> None:
        """One upsert (one history event) for all the changes since the last, just before the saga waits."""
        if self.pending_attributes:
            workflow.upsert_search_attributes(list(self.pending_attributes.values()))
            self.pending_attributes.clear()

    def _add_tracking(self, number: str) -> None:
        if number not in self.ids["tracking_numbers"]:
            self.ids["tracking_numbers"].append(number)
            self._stage(TRACKING_NUMBERS.value_set(list(self.ids["tracking_numbers"])))

    def _record(self, step: str, detail: str | None) -> StepRecord:
        return StepRecord(step=step, at=workflow.now().isoformat(), detail=detail)

    def _done(self, step: SagaStep, detail: str | None) -> None:
        self.steps_done.append(self._record(step.value, detail))

    def _lines_ordered(self) -> dict[str, int]:
        ordered: dict[str, int] = {}
        for line in self.order.lines:
            if line.requires_shipping:
                ordered[line.sku] = ordered.get(line.sku, 0) + line.quantity
        return ordered

    def _lines_shipped(self) -> dict[str, int]:
        shipped: dict[str, int] = {}
        for shipment in self.shipments.values():
            for line in shipment.lines:
                shipped[line.sku] = shipped.get(line.sku, 0) + line.quantity
        return shipped

    def _fully_shipped(self) -> bool:
        """Every unit ordered has shipped, or was cancelled after part of the order shipped."""
        shipped, cancelled = self._lines_shipped(), self.lines_cancelled
        return all(shipped.get(sku, 0) + cancelled.get(sku, 0) >= qty for sku, qty in self._lines_ordered().items())

    def _partly_cancellable(self) -> bool:
        """Part has shipped, part has not, and this saga cancels the unshipped part (the patch)."""
        return self.partial_cancel_allowed and bool(self.shipments) and not self._fully_shipped()

    def _partial_cancel_due(self) -> bool:
        return self.partial_cancel is not None and not self.partial_cancel_running and not self.partial_cancel_done

    def _channel_cancelled(self) -> bool:
        return self.partial_cancel is not None and self.partial_cancel.source is CancelSource.CHANNEL

    def _unconfirmed(self) -> list[Shipment]:
        return [s for sid, s in self.shipments.items() if sid not in self.confirmed_shipments]

    # -----------------------------------------------------------------------------------------
    # Messages: signals for the Temporal UI and webhooks, updates for the CLI's accepted-or-why
    # -----------------------------------------------------------------------------------------

    def _cancel_refusal(self) -> str | None:
        if self.partial_cancel is not None:
            return (
                f"order {self.order.key} already had what had not shipped cancelled ({self.partial_cancel.reason}); "
                "a return is the only way to undo what shipped"
            )
        if self.shipments and not self._partly_cancellable():
            return (
                f"order {self.order.key} has shipped ({len(self.shipments)} shipment(s)); "
                "a return is the only way to undo it"
            )
        if self.status in TERMINAL:
            return f"order {self.order.key} is already {self.status.value}"
        if self.cancel_request is not None:
            return f"order {self.order.key} is already being cancelled ({self.cancel_request.reason})"
        return None

    def _credit_refusal(self) -> str | None:
        if self.status is not OrderStatus.CREDIT_HOLD or self.credit_approval is not None:
            return f"order {self.order.key} is not on credit hold (status {self.status.value})"
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
        metrics.order_resumed(self.order.channel.value, self.attention_step or "", choice)
        self.steps_done.append(
            self._record(OPERATOR_RECORD, f"{choice} {self.attention_step} by {command.requested_by}{why}")
        )
        return choice

    def _operator_refusal(self, choice: str) -> str | None:
        if self.credit_hold_guarded and self.status is OrderStatus.CREDIT_HOLD:
            return f"order {self.order.key} is on credit hold: approve-credit releases it, cancel ends it"
        if not self._is_parked():
            return f"order {self.order.key} is not parked (status {self.status.value})"
        if self.operator_choice is not None:
            return f"an operator already chose {self.operator_choice}"
        if choice == "skip" and not self.parked_skippable:
            return f"step {self.attention_step} cannot be skipped; retry it after fixing the data, or cancel"
        return None

    @workflow.signal(name=SIGNAL_CANCEL)
    def on_cancel(self, request: CancelRequest) -> None:
        """Cancel the order (once part shipped, what has not); refused with a warning, and recorded, once all has."""
        refusal = self._cancel_refusal()
        if refusal is not None:
            self.cancel_refusals.append(f"{request.source.value}: {refusal}")
            reconcile = self.shipments and request.source is CancelSource.CHANNEL and not self._channel_cancelled()
            # A parked step keeps its attention, so the operator can still retry or skip it (the
            # refusal is in the state); sagas begun before the patch raise it over the parked step.
            if reconcile and not (self.partial_cancel_allowed and self._is_parked()):
                # The channel cancelled goods already on their way: a person must reconcile.
                self._raise_attention(SagaStep.AWAIT_SHIPMENT, f"channel cancelled after shipment: {request.reason}",
                                      skippable=False, parked=False)  # fmt: skip
            workflow.logger.warning("cancel of %s refused: %s", self.order.key, refusal)
            self._flush_attributes()
            return
        self._accept_cancel(request)

    def _accept_cancel(self, request: CancelRequest) -> None:
        if self.shipments:
            self.partial_cancel = request  # only when partly cancellable: the refusal said so
        else:
            self.cancel_request = request

    @workflow.update(name=UPDATE_CANCEL)
    def request_cancel(self, request: CancelRequest) -> ActionOutcome:
        """Cancel and say what that undoes; the validator refuses, with the reason, once all has shipped."""
        self._accept_cancel(request)
        if self.partial_cancel is not None:
            ordered, shipped = self._lines_ordered(), self._lines_shipped()
            units = ", ".join(f"{sku} x{qty - shipped.get(sku, 0)}" for sku, qty in sorted(ordered.items())
                              if qty > shipped.get(sku, 0))  # fmt: skip
            return ActionOutcome(
                accepted=True,
                message=f"cancelling what has not shipped of {self.order.key} ({units}) in the warehouse and the "
                "ERP; what shipped is confirmed and invoiced",
            )
        steps = ", ".join(step.value for step in reversed(self.compensations.steps)) or "nothing to undo"
        return ActionOutcome(accepted=True, message=f"cancelling {self.order.key}; undoing: {steps}")

    @request_cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        refusal = self._cancel_refusal()
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.signal(name=SIGNAL_APPROVE_CREDIT)
    def on_approve_credit(self, approval: CreditApproval) -> None:
        """Release the order from credit hold."""
        if self._credit_refusal() is None:
            self.credit_approval = approval

    @workflow.update(name=UPDATE_APPROVE_CREDIT)
    def request_credit_approval(self, approval: CreditApproval) -> ActionOutcome:
        """Release the order from credit hold and say so."""
        self.credit_approval = approval
        return ActionOutcome(
            accepted=True, message=f"credit approved by {approval.approved_by}; {self.order.key} continues"
        )

    @request_credit_approval.validator
    def _validate_credit(self, approval: CreditApproval) -> None:
        refusal = self._credit_refusal()
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
        return ActionOutcome(accepted=True, message=f"retrying {step} of {self.order.key}")

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
        return ActionOutcome(accepted=True, message=f"skipping {step} of {self.order.key}")

    @request_skip.validator
    def _validate_skip(self, command: OperatorCommand) -> None:
        refusal = self._operator_refusal("skip")
        if refusal is not None:
            raise ValueError(refusal)

    @workflow.signal(name=SIGNAL_SHIPMENT_CONFIRMED)
    def on_shipment_confirmed(self, message: ShipmentConfirmed) -> None:
        """Record a shipment the warehouse reported; a repeated delivery of the same shipment is ignored."""
        shipment = message.shipment
        if self.status in (OrderStatus.CANCELLING, OrderStatus.CANCELLED):
            workflow.logger.warning("shipment %s for cancelled order %s", shipment.shipment_id, self.order.key)
            return
        if shipment.shipment_id in self.shipments:
            return
        self.shipments[shipment.shipment_id] = shipment
        self._add_tracking(shipment.tracking.number)
        if self.status in (OrderStatus.RELEASED, OrderStatus.PARTIALLY_SHIPPED, OrderStatus.LABELLED):
            self._set_status(OrderStatus.SHIPPED if self._fully_shipped() else OrderStatus.PARTIALLY_SHIPPED)
        # The main coroutine may be parked on something else; make the shipment findable now.
        self._flush_attributes()

    @workflow.signal(name=SIGNAL_STOCK_AVAILABLE)
    def on_stock_available(self, message: StockAvailable) -> None:
        """Stock arrived: a backordered order tries to allocate again now rather than at the next re-check."""
        self.stock_signalled = True

    @workflow.signal(name=SIGNAL_DELIVERY_RECORDED)
    def on_delivery_recorded(self, message: DeliveryRecorded) -> None:
        """The carrier reported the parcel delivered."""
        if message.status == "delivered":
            self.delivered = True

    @workflow.query(name=QUERY_STATUS)
    def state(self) -> OrderSagaState:
        """Everything known about the order: status, steps, ids in each system, shipments, attention."""
        cancel = self.cancel_request or self.partial_cancel
        return OrderSagaState(
            key=self.order.key,
            channel=self.order.channel.value,
            status=self.status,
            current_step=self.current_step,
            steps_done=list(self.steps_done),
            compensations_done=list(self.compensations_done),
            ids=SystemIds(**self.ids),
            lines_ordered=self._lines_ordered(),
            lines_shipped=self._lines_shipped(),
            lines_cancelled=dict(self.lines_cancelled),
            # In the state (so in the order view) only with the patch: a refused cancel must not send an
            # order-view update that a saga begun before it never sent, or its history would not replay.
            cancel_refusals=list(self.cancel_refusals) if self.partial_cancel_allowed else [],
            needs_attention=self.attention_reason is not None,
            attention_reason=self.attention_reason,
            attention_step=self.attention_step,
            cancel_reason=cancel.reason if cancel else None,
            delivered=self.delivered,
            received_at_epoch_ms=self.input.received_at_epoch_ms,
        )
