"""Stand-in systems for the return saga's workflow tests: same activity names as the real ones, plain records.

As in `fake_systems.py` (the cosmicpython pattern), the fake keeps what each system holds (return
authorizations with what was received and credited, labels, warehouse returns, restocked units,
refunds) and the tests assert on that state and on the saga's own status, not on call counts.
The ERP part keeps the real rules that matter to the saga: an authorization cannot exceed what
shipped net of earlier authorizations, and a credit covers what was received and not yet credited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fake_systems import WAREHOUSE, AvailabilityStandIn, permanent
from temporalio import activity

from orderflow.canonical import (
    Address,
    Channel,
    Customer,
    ErpDocumentRef,
    InvoiceLine,
    ItemCondition,
    Label,
    Money,
    Order,
    OrderLine,
    Rate,
    RefundStatus,
    Return,
    ReturnLine,
    StockLevel,
    TaxLine,
)
from orderflow.canonical.erp import CreditMemo
from orderflow.canonical.return_saga import (
    BuyReturnLabelInput,
    BuyReturnLabelResult,
    CancelWmsReturnInput,
    CancelWmsReturnResult,
    ChannelReturnInput,
    ChannelReturnResult,
    CloseReturnAuthorizationInput,
    CloseReturnAuthorizationResult,
    CreateReturnAuthorizationInput,
    CreateReturnAuthorizationResult,
    CreateWmsReturnInput,
    CreateWmsReturnResult,
    IssueReturnCreditInput,
    IssueReturnCreditResult,
    LoadChannelOrderInput,
    LoadChannelOrderResult,
    LoadErpOrderInput,
    LoadErpOrderResult,
    LoadWarehouseOrderInput,
    LoadWarehouseOrderResult,
    ReceiveReturnInput,
    ReceiveReturnResult,
    RefundOnChannelInput,
    RefundOnChannelResult,
    RestockReturnInput,
    RestockReturnResult,
    SendReturnLabelInput,
    VoidReturnLabelInput,
    VoidReturnLabelResult,
)
from orderflow.canonical.returns import ChannelRefundRef, Refund, ReturnReceipt, ReturnReceiptLine, WmsReturn
from orderflow.canonical.saga import order_key_from_reference

SHIPPED_AT = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
# A 30-day window from the shipment: a request a week later is in time.
REQUESTED_AT = SHIPPED_AT + timedelta(days=7)
BOLT, NUT = "BOLT-M8-S", "NUT-M8-M"
ITEM_IDS = {BOLT: "1001", NUT: "1002"}
# Compensation activities, as the saga names them in `compensations_done`.
UNDO_ACTIVITIES = {"cancel_wms_return", "void_return_label", "close_return_authorization", "cancel_channel_return"}


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def returnable_order(order_id: str = "1042") -> Order:
    """A paid Shopify order: 4 bolts at 18.50 with 8.25% tax, 2 nuts at 9.75 with 8.25% tax."""
    lines = [
        OrderLine(line_id="L1", sku=BOLT, quantity=4, unit_price=usd("18.50"),
                  tax_lines=[TaxLine(title="TX", rate=Decimal("0.0825"), amount=usd("6.11"))]),
        OrderLine(line_id="L2", sku=NUT, quantity=2, unit_price=usd("9.75"),
                  tax_lines=[TaxLine(title="TX", rate=Decimal("0.0825"), amount=usd("1.61"))]),
    ]  # fmt: skip
    return Order(
        channel=Channel.SHOPIFY,
        channel_order_id=order_id,
        order_number=f"#{order_id}",
        placed_at=SHIPPED_AT - timedelta(days=1),
        currency="USD",
        customer=Customer(name="Ada Lovelace", channel_customer_id="207119551"),
        ship_to=Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US"),
        lines=lines,
        total=usd("101.22"),
    )


def return_request(
    return_id: str = "5001",
    lines: dict[str, int] | None = None,
    *,
    order_id: str = "1042",
    requested_at: datetime = REQUESTED_AT,
) -> Return:
    """A customer's return on Shopify against the order (2 bolts unless told otherwise)."""
    lines = lines if lines is not None else {BOLT: 2}
    return Return(
        channel=Channel.SHOPIFY,
        return_id=return_id,
        order_key=f"order:shopify:{order_id}",
        lines=[ReturnLine(sku=sku, quantity=qty, reason="not needed") for sku, qty in lines.items()],
        requested_at=requested_at,
    )


def receipt(
    wms_return_id: str,
    receipt_id: str,
    sellable: dict[str, int] | None = None,
    damaged: dict[str, int] | None = None,
    *,
    reference: str = "OFR-shopify-5001",
) -> ReturnReceipt:
    """A box the warehouse opened: these units sellable, those damaged."""
    lines = [
        ReturnReceiptLine(sku=s, quantity=q, condition=ItemCondition.SELLABLE) for s, q in (sellable or {}).items()
    ]
    lines += [ReturnReceiptLine(sku=s, quantity=q, condition=ItemCondition.DAMAGED) for s, q in (damaged or {}).items()]
    return ReturnReceipt(wms_return_id=wms_return_id, reference=reference, receipt_id=receipt_id, lines=lines,
                         received_at=REQUESTED_AT + timedelta(days=3))  # fmt: skip


@dataclass
class FakeAuthorization:
    """A return authorization in the fake ERP: units authorized, received and credited per SKU."""

    erp_id: str
    order_key: str
    lines: dict[str, int]
    received: dict[str, int] = field(default_factory=dict)
    credited: dict[str, int] = field(default_factory=dict)
    closed: bool = False


@dataclass
class FakeReturnSystems(AvailabilityStandIn):
    """Shopify, NetSuite, the WMS and the carrier as plain records, with switchable permanent failures."""

    orders: dict[str, Order] = field(default_factory=lambda: {"order:shopify:1042": returnable_order()})
    # order key -> units per SKU the ERP recorded as fulfilled
    shipped: dict[str, dict[str, int]] = field(default_factory=lambda: {"order:shopify:1042": {BOLT: 4, NUT: 2}})
    shipped_at: datetime = SHIPPED_AT
    # activity name -> how many more calls fail permanently (-1: until cleared)
    failures: dict[str, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    authorizations: dict[str, FakeAuthorization] = field(default_factory=dict)  # external id ->
    item_receipts: dict[str, tuple[str | None, dict[str, int]]] = field(default_factory=dict)  # ext id -> (loc, units)
    credits: dict[str, CreditMemo] = field(default_factory=dict)  # external id ->
    credit_adjustments: dict[str, tuple[Money | None, Money | None]] = field(default_factory=dict)  # (tax, fee)
    labels: dict[str, str] = field(default_factory=dict)  # reference -> "bought" | "refunded"
    wms_returns: dict[str, str] = field(default_factory=dict)  # reference -> "awaiting" | "cancelled"
    restocked: dict[str, int] = field(default_factory=dict)  # SKU -> sellable units back in stock
    restocked_receipts: list[str] = field(default_factory=list)
    channel_returns: dict[str, list[str]] = field(default_factory=dict)  # return id -> what happened, in order
    refunds: dict[str, Refund] = field(default_factory=dict)  # idempotency key -> refund made

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        remaining = self.failures.get(name, 0)
        if remaining:
            if remaining > 0:
                self.failures[name] = remaining - 1
            raise permanent(f"{name} rejected by the test")

    def compensations(self) -> list[str]:
        """The undo activities called, in order."""
        return [c for c in self.calls if c in UNDO_ACTIVITIES]

    def _channel(self, return_id: str, event: str) -> None:
        self.channel_returns.setdefault(return_id, []).append(event)

    # -- channel ---------------------------------------------------------------------------------

    @activity.defn(name="load_channel_order")
    async def load_channel_order(self, input: LoadChannelOrderInput) -> LoadChannelOrderResult:
        self._enter("load_channel_order")
        return LoadChannelOrderResult(order=self.orders.get(f"order:{input.channel.value}:{input.channel_order_id}"))

    @activity.defn(name="approve_channel_return")
    async def approve_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        self._enter("approve_channel_return")
        self._channel(input.channel_return_id, "approved")
        return ChannelReturnResult(detail="approved")

    @activity.defn(name="send_return_label")
    async def send_return_label(self, input: SendReturnLabelInput) -> ChannelReturnResult:
        self._enter("send_return_label")
        self._channel(input.channel_return_id, f"label {input.label.tracking_number}")
        return ChannelReturnResult(detail="label sent")

    @activity.defn(name="close_channel_return")
    async def close_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        self._enter("close_channel_return")
        self._channel(input.channel_return_id, "closed")
        return ChannelReturnResult(detail="closed")

    @activity.defn(name="cancel_channel_return")
    async def cancel_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        self._enter("cancel_channel_return")
        self._channel(input.channel_return_id, "cancelled")
        return ChannelReturnResult(detail="cancelled on the channel")

    @activity.defn(name="refund_on_channel")
    async def refund_on_channel(self, input: RefundOnChannelInput) -> RefundOnChannelResult:
        self._enter("refund_on_channel")
        done = input.idempotency_key in self.refunds
        if not done:
            self.refunds[input.idempotency_key] = input.refund
        made = self.refunds[input.idempotency_key]
        ref = ChannelRefundRef(channel_refund_id=f"RF-{len(self.refunds)}", amount=made.total)
        return RefundOnChannelResult(refund=ref, already_issued=done)

    # -- ERP -------------------------------------------------------------------------------------

    def _authorized(self, order_key: str, *, besides: str | None = None) -> dict[str, int]:
        """Units other authorizations of the order stand for: received once closed, else authorized."""
        units: dict[str, int] = {}
        for external_id, ra in self.authorizations.items():
            if ra.order_key != order_key or external_id == besides:
                continue
            for sku, qty in ra.lines.items():
                units[sku] = units.get(sku, 0) + (ra.received.get(sku, 0) if ra.closed else qty)
        return units

    @activity.defn(name="load_erp_order_for_return")
    async def load_erp_order_for_return(self, input: LoadErpOrderInput) -> LoadErpOrderResult:
        self._enter("load_erp_order_for_return")
        if input.order_key not in self.shipped:
            return LoadErpOrderResult(found=False)
        return LoadErpOrderResult(
            found=True,
            erp_order_id=f"SO-{input.order_key.rsplit(':', 1)[1]}",
            erp_customer_id="2001",
            shipped=dict(self.shipped[input.order_key]),
            returned_earlier=self._authorized(input.order_key, besides=input.return_authorization_external_id),
            item_weights_oz={sku: Decimal(20) for sku in input.skus},
        )

    def _order_key(self, erp_order_id: str) -> str:
        return f"order:shopify:{erp_order_id.removeprefix('SO-')}"

    @activity.defn(name="create_return_authorization")
    async def create_return_authorization(
        self, input: CreateReturnAuthorizationInput
    ) -> CreateReturnAuthorizationResult:
        self._enter("create_return_authorization")
        if input.external_id not in self.authorizations:
            order_key = self._order_key(input.erp_order_id)
            taken = self._authorized(order_key)
            wanted: dict[str, int] = {}
            for line in input.lines:
                wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
            over = [s for s, q in wanted.items() if q > self.shipped[order_key].get(s, 0) - taken.get(s, 0)]
            if over:
                raise permanent(f"more than the sales order has left for {', '.join(over)}")
            erp_id = f"RA-{len(self.authorizations) + 1}"
            self.authorizations[input.external_id] = FakeAuthorization(erp_id, order_key, wanted)
        ref = ErpDocumentRef(record_type="returnAuthorization", erp_id=self.authorizations[input.external_id].erp_id,
                             external_id=input.external_id)  # fmt: skip
        return CreateReturnAuthorizationResult(authorization=ref)

    @activity.defn(name="close_return_authorization")
    async def close_return_authorization(self, input: CloseReturnAuthorizationInput) -> CloseReturnAuthorizationResult:
        self._enter("close_return_authorization")
        ra = self.authorizations.get(input.external_id)
        if ra is None:
            return CloseReturnAuthorizationResult(closed=False)
        ra.closed = True
        return CloseReturnAuthorizationResult(closed=True, status="closed")

    def _by_id(self, erp_id: str) -> FakeAuthorization:
        return next(ra for ra in self.authorizations.values() if ra.erp_id == erp_id)

    @activity.defn(name="receive_return_in_erp")
    async def receive_return_in_erp(self, input: ReceiveReturnInput) -> ReceiveReturnResult:
        self._enter("receive_return_in_erp")
        if input.external_id not in self.item_receipts:
            ra = self._by_id(input.erp_return_authorization_id)
            units: dict[str, int] = {}
            for line in input.lines:
                if ra.received.get(line.sku, 0) + line.quantity > ra.lines.get(line.sku, 0):
                    raise permanent(f"cannot receive more {line.sku} than authorized")
                ra.received[line.sku] = ra.received.get(line.sku, 0) + line.quantity
                units[line.sku] = units.get(line.sku, 0) + line.quantity
            self.item_receipts[input.external_id] = (input.location_id, units)
        erp_id = f"IR-{list(self.item_receipts).index(input.external_id) + 1}"
        return ReceiveReturnResult(item_receipt=ErpDocumentRef(record_type="itemReceipt", erp_id=erp_id))

    @activity.defn(name="issue_return_credit")
    async def issue_return_credit(self, input: IssueReturnCreditInput) -> IssueReturnCreditResult:
        self._enter("issue_return_credit")
        if input.external_id not in self.credits:
            ra = self._by_id(input.erp_return_authorization_id)
            order = self.orders[ra.order_key]
            lines = []
            for sku, received in sorted(ra.received.items()):
                units = received - ra.credited.get(sku, 0)
                if units <= 0:
                    continue
                line = next(ln for ln in order.lines if ln.sku == sku)
                amount = Money(amount=line.net.amount / line.quantity * units, currency="USD").rounded()
                lines.append(InvoiceLine(sku=sku, erp_item_id=ITEM_IDS[sku], quantity=units, amount=amount))
                ra.credited[sku] = received
            if not lines:
                raise permanent("there is nothing left to credit on this return authorization")
            tax, fee = input.tax or usd("0"), input.restocking_fee or usd("0")
            total = sum((ln.amount for ln in lines), usd("0")) + tax - fee
            self.credits[input.external_id] = CreditMemo(
                erp_credit_memo_id=f"CM-{len(self.credits) + 1}", external_id=input.external_id,
                created_from_id=ra.erp_id, lines=lines, total=total, record_type=input.method.value, tax_total=tax,
            )  # fmt: skip
            self.credit_adjustments[input.external_id] = (input.tax, input.restocking_fee)
        return IssueReturnCreditResult(credit=self.credits[input.external_id])

    # -- warehouse -------------------------------------------------------------------------------

    @activity.defn(name="load_warehouse_order_for_return")
    async def load_warehouse_order_for_return(self, input: LoadWarehouseOrderInput) -> LoadWarehouseOrderResult:
        self._enter("load_warehouse_order_for_return")
        if order_key_from_reference(input.order_reference) not in self.shipped:
            return LoadWarehouseOrderResult()
        return LoadWarehouseOrderResult(wms_order_id="700", warehouse_id="8", last_shipped_at=self.shipped_at)

    @activity.defn(name="create_wms_return")
    async def create_wms_return(self, input: CreateWmsReturnInput) -> CreateWmsReturnResult:
        self._enter("create_wms_return")
        self.wms_returns.setdefault(input.reference, "awaiting")
        wms_return_id = f"RET-{list(self.wms_returns).index(input.reference) + 1}"
        made = WmsReturn(wms_return_id=wms_return_id, reference=input.reference, status="Awaiting Arrival",
                         tracking_number=input.tracking_number, lines=input.lines)  # fmt: skip
        return CreateWmsReturnResult(wms_return=made)

    @activity.defn(name="cancel_wms_return")
    async def cancel_wms_return(self, input: CancelWmsReturnInput) -> CancelWmsReturnResult:
        self._enter("cancel_wms_return")
        if input.reference not in self.wms_returns:
            return CancelWmsReturnResult(cancelled=False)
        self.wms_returns[input.reference] = "cancelled"
        return CancelWmsReturnResult(cancelled=True, status="Cancelled")

    @activity.defn(name="restock_return")
    async def restock_return(self, input: RestockReturnInput) -> RestockReturnResult:
        self._enter("restock_return")
        if input.receipt.receipt_id not in self.restocked_receipts:
            self.restocked_receipts.append(input.receipt.receipt_id)
            for sku, units in input.receipt.sellable.items():
                self.restocked[sku] = self.restocked.get(sku, 0) + units
        stock = [StockLevel(sku=sku, warehouse_id="8", on_hand=100 + u, committed=0, fulfillable=100 + u)
                 for sku, u in self.restocked.items()]  # fmt: skip
        return RestockReturnResult(stock=stock)

    # -- carrier ---------------------------------------------------------------------------------

    @activity.defn(name="buy_return_label")
    async def buy_return_label(self, input: BuyReturnLabelInput) -> BuyReturnLabelResult:
        self._enter("buy_return_label")
        self.labels[input.reference] = "bought"
        rate = Rate(rate_id="rate_r", carrier="USPS", service="GroundAdvantage", amount=usd("6.20"))
        label = Label(carrier_shipment_id="shp_r1", reference=input.reference, rate=rate, tracking_number="9400RET1",
                      label_url="http://labels/r1.pdf", is_return=True)  # fmt: skip
        return BuyReturnLabelResult(label=label, warehouse=WAREHOUSE)

    @activity.defn(name="void_return_label")
    async def void_return_label(self, input: VoidReturnLabelInput) -> VoidReturnLabelResult:
        self._enter("void_return_label")
        bought = input.reference in self.labels
        if bought:
            self.labels[input.reference] = "refunded"
        return VoidReturnLabelResult(refund_status=RefundStatus.SUBMITTED if bought else None)

    def activities(self) -> list[Callable[..., Any]]:
        """Every stand-in, bound to this fake, for a Worker."""
        return [
            self.load_channel_order, self.approve_channel_return, self.send_return_label, self.close_channel_return,
            self.cancel_channel_return, self.refund_on_channel, self.load_erp_order_for_return,
            self.create_return_authorization, self.close_return_authorization, self.receive_return_in_erp,
            self.issue_return_credit, self.load_warehouse_order_for_return, self.create_wms_return,
            self.cancel_wms_return, self.restock_return, self.buy_return_label, self.void_return_label,
            self.publish_availability,
        ]  # fmt: skip
