"""Stand-in activities for workflow tests: same names as the real ones, recording what happened.

Following the cosmicpython pattern, the fake keeps plain lists of what was done (reservations,
sales orders, labels...) and the tests assert on that state and on the saga's own status, not on
mock call counts. Failures are switched on per activity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from orderflow.canonical import (
    Address,
    Allocation,
    AllocationLine,
    AllocationStatus,
    CancellationOutcome,
    Channel,
    Customer,
    ErpDocumentRef,
    FulfillmentLine,
    FulfillmentOrder,
    FulfillmentStatus,
    Invoice,
    InvoiceLine,
    Label,
    Money,
    Order,
    OrderLine,
    PaymentTerms,
    Rate,
    RefundStatus,
    SalesOrder,
    SalesOrderRef,
    SalesOrderStatus,
    Shipment,
    ShipmentLine,
    Tracking,
)
from orderflow.canonical.saga import (
    AcceptOrderInput,
    AcceptOrderResult,
    AllocateInput,
    AllocateResult,
    BuyLabelInput,
    BuyLabelResult,
    CancelFulfillmentOrderInput,
    CancelFulfillmentOrderResult,
    CancelOnChannelInput,
    CancelOnChannelResult,
    CancelUnshippedLinesInput,
    CancelUnshippedLinesResult,
    CloseSalesOrderInput,
    CloseSalesOrderResult,
    CloseUnshippedLinesInput,
    CloseUnshippedLinesResult,
    ConfirmShipmentInput,
    ConfirmShipmentOnChannelResult,
    CreditCheckInput,
    CreditCheckResult,
    CreditDecision,
    InvoiceOrderInput,
    InvoiceOrderResult,
    OrderViewUpdate,
    PostSalesOrderInput,
    PostSalesOrderResult,
    PublishAvailabilityInput,
    PublishAvailabilityResult,
    RecordFulfillmentResult,
    ReleaseAllocationInput,
    ReleaseAllocationResult,
    ReleaseToWarehouseInput,
    ReleaseToWarehouseResult,
    VoidLabelInput,
    VoidLabelResult,
)

WAREHOUSE = Address(name="Cicero (IL)", line1="5900 W Ogden Ave", city="Cicero", region="IL", postal_code="60804",
                    country="US")  # fmt: skip


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def make_order(order_id: str = "1042", *, lines: dict[str, int] | None = None, terms: bool = False) -> Order:
    """A Shopify order for the given SKUs and quantities."""
    lines = lines or {"BOLT-M8-S": 2, "NUT-M8-M": 1}
    order_lines = [
        OrderLine(line_id=f"L{i}", sku=sku, quantity=qty, unit_price=usd("10.00"))
        for i, (sku, qty) in enumerate(lines.items())
    ]
    return Order(
        channel=Channel.SHOPIFY,
        channel_order_id=order_id,
        order_number=f"#{order_id}",
        placed_at=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        currency="USD",
        customer=Customer(
            name="Acme Industrial" if terms else "Ada Lovelace",
            channel_customer_id="307119551" if terms else "207119551",
            terms=PaymentTerms.TERMS if terms else PaymentTerms.PREPAID,
            credit_limit=usd("50000") if terms else None,
        ),
        ship_to=Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US"),
        lines=order_lines,
        total=usd(str(sum(10 * q for q in lines.values()))),
    )


def shipment_for(order: Order, shipment_id: str = "S1", *, lines: dict[str, int] | None = None) -> Shipment:
    """A shipment of the given lines (all of the order's when None)."""
    lines = lines if lines is not None else {line.sku: line.quantity for line in order.lines}
    return Shipment(
        shipment_id=shipment_id,
        tracking=Tracking(carrier="UPS", number=f"1Z{shipment_id}"),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
        shipped_at=datetime(2026, 11, 2, tzinfo=UTC),
    )


def permanent(message: str, kind: str = "ValidationRejectedError") -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@dataclass
class AvailabilityStandIn:
    """The channels' listings as both sagas publish to them (background and best effort; not in `calls`)."""

    availability: list[list[str]] = field(default_factory=list)  # the SKUs of each publication, in order
    availability_failures: int = 0  # how many more publications fail for good

    @activity.defn(name="publish_availability")
    async def publish_availability(self, input: PublishAvailabilityInput) -> PublishAvailabilityResult:
        if self.availability_failures > 0:
            self.availability_failures -= 1
            raise permanent("the channel refused the listing update")
        self.availability.append(list(input.skus))
        return PublishAvailabilityResult(published={"amazon": dict.fromkeys(input.skus, 0)})


@dataclass
class FakeSystems(AvailabilityStandIn):
    """The ERP, warehouse, carrier and channel as plain records, with switchable failures."""

    terms: PaymentTerms = PaymentTerms.PREPAID
    credit: CreditDecision = CreditDecision.APPROVED
    backordered_allocations: int = 0
    # activity name -> how many more calls fail permanently (-1: until cleared)
    failures: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    reservations: dict[str, str] = field(default_factory=dict)  # reference -> "held" | "released"
    sales_orders: dict[str, str] = field(default_factory=dict)  # external id -> "open" | "closed"
    labels: dict[str, str] = field(default_factory=dict)  # reference -> "bought" | "refunded"
    wms_orders: dict[str, str] = field(default_factory=dict)  # reference -> "released" | "cancelled"
    channel_fulfillments: list[str] = field(default_factory=list)
    erp_fulfillments: list[str] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)
    channel_cancellations: list[str] = field(default_factory=list)
    refuse_wms_cancel: bool = False
    # The order view as the saga sent it (a local activity; not in `calls`, which lists the systems' steps).
    order_views: list[OrderViewUpdate] = field(default_factory=list)
    order_view_failures: int = 0  # how many more view updates fail (each attempt counts)
    # Partial cancellation: units fulfilled in the ERP, what the warehouse cancelled and the ERP
    # closed, what each invoice billed (fulfilled and not yet billed, as NetSuite bills).
    fulfilled_units: dict[str, int] = field(default_factory=dict)  # sku -> units recorded as item fulfillments
    wms_cancelled_lines: dict[str, dict[str, int]] = field(default_factory=dict)  # reference -> sku -> units
    erp_closed_lines: dict[str, dict[str, int]] = field(default_factory=dict)  # external id -> sku -> units
    invoiced_units: list[dict[str, int]] = field(default_factory=list)  # per invoice: sku -> units billed
    # sku -> units already picked when the cancel arrives: the warehouse ships them instead of cancelling.
    picked_before_cancel: dict[str, int] = field(default_factory=dict)

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        remaining = self.failures.get(name, 0)
        if remaining:
            if remaining > 0:
                self.failures[name] = remaining - 1
            raise permanent(f"{name} rejected by the test")

    def compensations(self) -> list[str]:
        """The undo activities called, in order."""
        undo = {
            "release_allocation",
            "close_sales_order",
            "void_label",
            "cancel_fulfillment_order",
            "cancel_on_channel",
        }
        return [c for c in self.calls if c in undo]

    @activity.defn(name="accept_order")
    async def accept_order(self, input: AcceptOrderInput) -> AcceptOrderResult:
        self._enter("accept_order")
        return AcceptOrderResult(
            erp_customer_id="3001" if self.terms is PaymentTerms.TERMS else "2001",
            terms=self.terms,
            item_ids={line.sku: str(1000 + i) for i, line in enumerate(input.order.lines)},
            item_weights_oz={line.sku: Decimal(20) for line in input.order.lines},
        )

    @activity.defn(name="check_credit")
    async def check_credit(self, input: CreditCheckInput) -> CreditCheckResult:
        self._enter("check_credit")
        return CreditCheckResult(decision=self.credit, reason="available 100.00 USD < order 500.00 USD"
                                 if self.credit is CreditDecision.HOLD else "within limit")  # fmt: skip

    @activity.defn(name="allocate")
    async def allocate(self, input: AllocateInput) -> AllocateResult:
        self._enter("allocate")
        backordered = self.backordered_allocations > 0
        if backordered:
            self.backordered_allocations -= 1
        else:
            self.reservations[input.reference] = "held"
        lines = [
            AllocationLine(sku=line.sku, warehouse_id="8", quantity_requested=line.quantity,
                           quantity_allocated=0 if backordered else line.quantity)
            for line in input.order.lines
        ]  # fmt: skip
        status = AllocationStatus.BACKORDERED if backordered else AllocationStatus.ALLOCATED
        return AllocateResult(allocation=Allocation(order_key=input.order.key, lines=lines, status=status))

    @activity.defn(name="release_allocation")
    async def release_allocation(self, input: ReleaseAllocationInput) -> ReleaseAllocationResult:
        self._enter("release_allocation")
        held = self.reservations.get(input.reference) == "held"
        if held:
            self.reservations[input.reference] = "released"
        return ReleaseAllocationResult(released=held)

    @activity.defn(name="post_sales_order")
    async def post_sales_order(self, input: PostSalesOrderInput) -> PostSalesOrderResult:
        self._enter("post_sales_order")
        self.sales_orders[input.external_id] = "open"
        return PostSalesOrderResult(sales_order=SalesOrderRef(erp_order_id="4321", external_id=input.external_id))

    @activity.defn(name="close_sales_order")
    async def close_sales_order(self, input: CloseSalesOrderInput) -> CloseSalesOrderResult:
        self._enter("close_sales_order")
        posted = input.external_id in self.sales_orders
        if posted:
            self.sales_orders[input.external_id] = "closed"
        return CloseSalesOrderResult(closed=posted)

    @activity.defn(name="buy_label")
    async def buy_label(self, input: BuyLabelInput) -> BuyLabelResult:
        self._enter("buy_label")
        self.labels[input.reference] = "bought"
        rate = Rate(rate_id="rate_1", carrier="UPS", service="Ground", amount=usd("7.50"))
        label = Label(carrier_shipment_id="shp_1", reference=input.reference, rate=rate,
                      tracking_number="1ZLABEL", label_url="http://labels/1.pdf")  # fmt: skip
        return BuyLabelResult(label=label, ship_from=WAREHOUSE)

    @activity.defn(name="void_label")
    async def void_label(self, input: VoidLabelInput) -> VoidLabelResult:
        self._enter("void_label")
        bought = input.reference in self.labels
        if bought:
            self.labels[input.reference] = "refunded"
        return VoidLabelResult(refund_status=RefundStatus.SUBMITTED if bought else None)

    @activity.defn(name="release_to_warehouse")
    async def release_to_warehouse(self, input: ReleaseToWarehouseInput) -> ReleaseToWarehouseResult:
        self._enter("release_to_warehouse")
        self.wms_orders[input.reference] = "released"
        lines = [FulfillmentLine(sku=line.sku, quantity=line.quantity) for line in input.order.lines]
        fo = FulfillmentOrder(wms_order_id="700", reference=input.reference, status=FulfillmentStatus.PROCESSING,
                              lines=lines)  # fmt: skip
        return ReleaseToWarehouseResult(fulfillment_order=fo)

    @activity.defn(name="cancel_fulfillment_order")
    async def cancel_fulfillment_order(self, input: CancelFulfillmentOrderInput) -> CancelFulfillmentOrderResult:
        self._enter("cancel_fulfillment_order")
        if input.reference not in self.wms_orders:
            return CancelFulfillmentOrderResult(outcome=None)
        if self.refuse_wms_cancel:
            return CancelFulfillmentOrderResult(outcome=CancellationOutcome.REFUSED, reason="label created")
        self.wms_orders[input.reference] = "cancelled"
        return CancelFulfillmentOrderResult(outcome=CancellationOutcome.CANCELLED)

    @activity.defn(name="confirm_shipment_on_channel")
    async def confirm_shipment_on_channel(self, input: ConfirmShipmentInput) -> ConfirmShipmentOnChannelResult:
        self._enter("confirm_shipment_on_channel")
        self.channel_fulfillments.append(input.shipment.tracking.number)
        return ConfirmShipmentOnChannelResult(channel_fulfillment_id=f"F-{input.shipment.shipment_id}")

    @activity.defn(name="record_fulfillment")
    async def record_fulfillment(self, input: ConfirmShipmentInput) -> RecordFulfillmentResult:
        self._enter("record_fulfillment")
        self.erp_fulfillments.append(input.shipment.shipment_id)
        for line in input.shipment.lines:
            self.fulfilled_units[line.sku] = self.fulfilled_units.get(line.sku, 0) + line.quantity
        ref = ErpDocumentRef(record_type="itemFulfillment", erp_id=f"IF-{input.shipment.shipment_id}")
        return RecordFulfillmentResult(fulfillment=ref)

    @activity.defn(name="invoice_order")
    async def invoice_order(self, input: InvoiceOrderInput) -> InvoiceOrderResult:
        self._enter("invoice_order")
        self.invoices.append(input.external_id)
        billed: dict[str, int] = {}
        for units in self.invoiced_units:
            for sku, qty in units.items():
                billed[sku] = billed.get(sku, 0) + qty
        due = {sku: qty - billed.get(sku, 0) for sku, qty in self.fulfilled_units.items() if qty > billed.get(sku, 0)}
        self.invoiced_units.append(due)
        # Every line of `make_order` costs 10.00, so the whole default order bills 30.00.
        lines = [InvoiceLine(sku=sku, erp_item_id=sku, quantity=qty, amount=usd(str(10 * qty)))
                 for sku, qty in due.items()]  # fmt: skip
        invoice = Invoice(
            erp_invoice_id="INV-1",
            erp_order_id=input.erp_order_id,
            issued_on=datetime(2026, 11, 3, tzinfo=UTC).date(),
            lines=lines,
            total=usd(str(sum(10 * qty for qty in due.values()))),
        )
        return InvoiceOrderResult(invoice=invoice)

    @activity.defn(name="cancel_unshipped_lines")
    async def cancel_unshipped_lines(self, input: CancelUnshippedLinesInput) -> CancelUnshippedLinesResult:
        self._enter("cancel_unshipped_lines")
        if input.reference not in self.wms_orders:
            return CancelUnshippedLinesResult(cancelled=dict(input.quantities))
        cancelled = {sku: qty - self.picked_before_cancel.get(sku, 0) for sku, qty in input.quantities.items()}
        cancelled = {sku: qty for sku, qty in cancelled.items() if qty > 0}
        self.wms_cancelled_lines[input.reference] = cancelled
        still = [FulfillmentLine(sku=sku, quantity=qty) for sku, qty in self.picked_before_cancel.items() if qty > 0]
        fo = FulfillmentOrder(wms_order_id="700", reference=input.reference,
                              status=FulfillmentStatus.PARTIALLY_FULFILLED, lines=still)  # fmt: skip
        return CancelUnshippedLinesResult(cancelled=cancelled, fulfillment_order=fo)

    @activity.defn(name="close_unshipped_lines")
    async def close_unshipped_lines(self, input: CloseUnshippedLinesInput) -> CloseUnshippedLinesResult:
        self._enter("close_unshipped_lines")
        if input.external_id not in self.sales_orders:
            return CloseUnshippedLinesResult(sales_order=None)
        self.erp_closed_lines[input.external_id] = dict(input.quantities)
        order = SalesOrder(erp_order_id="4321", external_id=input.external_id, erp_customer_id="2001",
                           status=SalesOrderStatus.PARTIALLY_FULFILLED, lines=[], total=usd("30.00"))  # fmt: skip
        return CloseUnshippedLinesResult(sales_order=order)

    @activity.defn(name="cancel_on_channel")
    async def cancel_on_channel(self, input: CancelOnChannelInput) -> CancelOnChannelResult:
        self._enter("cancel_on_channel")
        self.channel_cancellations.append(input.order.key)
        return CancelOnChannelResult(cancelled=True)

    @activity.defn(name="record_order_view")
    async def record_order_view(self, update: OrderViewUpdate) -> None:
        if self.order_view_failures > 0:
            self.order_view_failures -= 1
            raise RuntimeError("the order view's database is down")
        self.order_views.append(update)

    def view_statuses(self) -> list[str]:
        """The statuses the order view was told, in order, repeats collapsed."""
        statuses: list[str] = []
        for update in self.order_views:
            if not statuses or statuses[-1] != update.state.status.value:
                statuses.append(update.state.status.value)
        return statuses

    def activities(self) -> list[Callable[..., Any]]:
        """Every stand-in, bound to this fake, for a Worker."""
        return [
            self.accept_order, self.check_credit, self.allocate, self.release_allocation, self.post_sales_order,
            self.close_sales_order, self.buy_label, self.void_label, self.release_to_warehouse,
            self.cancel_fulfillment_order, self.confirm_shipment_on_channel, self.record_fulfillment,
            self.invoice_order, self.cancel_on_channel, self.record_order_view, self.cancel_unshipped_lines,
            self.close_unshipped_lines, self.publish_availability,
        ]  # fmt: skip
