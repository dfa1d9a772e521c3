"""Steps of return to refund, one class per system: channel (Shopify), ERP (NetSuite), warehouse, carrier.

Each method calls its adapter, with the idempotency key the saga hands it, and raises failures in
Temporal's terms (`failures.py`). Each is safe to repeat: creates are keyed by the return's
reference or an external id, undos find their record by the same key and succeed when there is none.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.carrier import SYSTEM as CARRIER
from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.errors import NotFoundError, ValidationRejectedError
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel
from orderflow.canonical.erp import ReturnAuthorization, ReturnAuthorizationLine, ReturnAuthorizationStatus
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
    RefundMethod,
    RefundOnChannelInput,
    RefundOnChannelResult,
    RestockReturnInput,
    RestockReturnResult,
    SendReturnLabelInput,
    VoidReturnLabelInput,
    VoidReturnLabelResult,
)
from orderflow.canonical.saga import order_reference


def _units_held(authorization: ReturnAuthorization, line: ReturnAuthorizationLine) -> int:
    """Units a line of another return stands for: what it received once closed, else what it authorized."""
    if line.is_closed or authorization.status is ReturnAuthorizationStatus.CLOSED:
        return line.quantity_received
    return max(line.quantity, line.quantity_received)


class ReturnChannelActivities:
    """The return's steps on the channel: read the order, keep the channel's return in step, refund."""

    def __init__(self, channels: Mapping[Channel, ShopifyClient | AmazonClient]) -> None:
        self.channels = channels

    def _client(self, channel: Channel) -> ShopifyClient | AmazonClient:
        client = self.channels.get(channel)
        if client is None:
            raise ValidationRejectedError(
                f"this worker has no client for channel {channel.value}",
                system=channel.value,
                vendor_code="CHANNEL_NOT_CONFIGURED",
            )
        return client

    def _returns_on(self, channel: Channel) -> ShopifyClient:
        """The client of a channel whose returns orderflow keeps in step (Shopify's return objects)."""
        client = self._client(channel)
        if not isinstance(client, ShopifyClient):
            # Amazon's merchant-fulfilled returns are opened by an operator (origin `operator`): there
            # is no return object on Amazon for the saga to approve, label, close or cancel.
            raise ValidationRejectedError(
                f"{channel.value} has no return object orderflow keeps in step; open its returns as an operator",
                system=channel.value,
                vendor_code="CHANNEL_RETURNS_NOT_SUPPORTED",
            )
        return client

    @activity.defn
    async def load_channel_order(self, input: LoadChannelOrderInput) -> LoadChannelOrderResult:
        """The original order as the channel holds it; an order the channel does not have is None, not a failure."""
        with translated_failures():
            try:
                order = await self._client(input.channel).get_order(input.channel_order_id)
            except NotFoundError:
                return LoadChannelOrderResult(order=None)
        return LoadChannelOrderResult(order=order)

    @activity.defn
    async def approve_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        """Approve the customer's return request on the channel; already approved is success."""
        with translated_failures():
            await self._returns_on(input.channel).approve_return(input.channel_return_id)
        return ChannelReturnResult(detail=f"return {input.channel_return_id} approved on {input.channel.value}")

    @activity.defn
    async def send_return_label(self, input: SendReturnLabelInput) -> ChannelReturnResult:
        """Attach the return label to the channel's return, so the customer can print it; a repeat is a no-op."""
        with translated_failures():
            await self._returns_on(input.channel).attach_return_label(input.channel_return_id, input.label)
        return ChannelReturnResult(detail=f"label {input.label.tracking_number} sent to {input.channel.value}")

    @activity.defn
    async def close_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        """Close the channel's return once it is refunded; already closed is success."""
        with translated_failures():
            await self._returns_on(input.channel).close_return(input.channel_return_id)
        return ChannelReturnResult(detail=f"return {input.channel_return_id} closed on {input.channel.value}")

    @activity.defn
    async def cancel_channel_return(self, input: ChannelReturnInput) -> ChannelReturnResult:
        """Cancel (or decline) the channel's return; already cancelled, or not there at all, is success."""
        with translated_failures():
            try:
                await self._returns_on(input.channel).cancel_return(input.channel_return_id)
            except NotFoundError:
                return ChannelReturnResult(detail=f"return {input.channel_return_id} not on the channel; nothing to do")
        return ChannelReturnResult(detail=f"return {input.channel_return_id} cancelled on {input.channel.value}")

    @activity.defn
    async def refund_on_channel(self, input: RefundOnChannelInput) -> RefundOnChannelResult:
        """Refund the buyer once per idempotency key: an attempt whose answer was lost is found, not repeated."""
        client = self._client(input.channel)
        if isinstance(client, AmazonClient):
            # Amazon refunds a merchant-fulfilled order through the payment adjustment feed; the
            # adapter finds the feed an earlier attempt sent under this key, and succeeds once its
            # processing report is clean (a retryable error while Amazon is still processing it).
            with translated_failures():
                made = await client.refund(input.channel_order_id, input.refund, idempotency_key=input.idempotency_key)
            return RefundOnChannelResult(refund=made)
        with translated_failures():
            existing = await client.find_refund(input.channel_order_id, input.idempotency_key)
            if existing is not None:
                return RefundOnChannelResult(refund=existing, already_issued=True)
            made = await client.refund(input.channel_order_id, input.refund, idempotency_key=input.idempotency_key)
        return RefundOnChannelResult(refund=made)


class ReturnErpActivities:
    """The return's steps in the ERP: what shipped, the return authorization, receipts, the credit."""

    def __init__(self, netsuite: NetSuiteClient) -> None:
        self.netsuite = netsuite

    @activity.defn
    async def load_erp_order_for_return(self, input: LoadErpOrderInput) -> LoadErpOrderResult:
        """Units shipped and already returned per SKU, the ERP customer, and item weights for the parcel."""
        skus = set(input.skus)
        with translated_failures():
            try:
                sales_order = await self.netsuite.get_sales_order(external_id=order_reference(input.order_key))
            except NotFoundError:
                return LoadErpOrderResult(found=False)
            items = await self.netsuite.find_items_by_sku(sorted(skus))
            authorizations = await self.netsuite.list_return_authorizations(sales_order.erp_order_id)
        # A channel SKU need not be the ERP line's SKU; the item id ties them together.
        sku_of_item = {item.erp_item_id: sku for sku, item in items.items()}

        def sku_of(sku: str | None, erp_item_id: str) -> str | None:
            return sku if sku in skus else sku_of_item.get(erp_item_id)

        shipped: dict[str, int] = {}
        for line in sales_order.lines:
            sku = sku_of(line.sku, line.erp_item_id)
            if sku is not None and line.quantity_fulfilled:
                shipped[sku] = shipped.get(sku, 0) + line.quantity_fulfilled
        returned: dict[str, int] = {}
        for authorization in authorizations:
            if authorization.external_id == input.return_authorization_external_id:
                continue  # this return's own authorization, from an earlier attempt
            for ra_line in authorization.lines:
                sku = sku_of(ra_line.sku, ra_line.erp_item_id)
                units = _units_held(authorization, ra_line)
                if sku is not None and units:
                    returned[sku] = returned.get(sku, 0) + units
        weights = {sku: item.weight_oz for sku, item in items.items() if item.weight_oz is not None}
        return LoadErpOrderResult(
            found=True,
            erp_order_id=sales_order.erp_order_id,
            erp_customer_id=sales_order.erp_customer_id,
            shipped=shipped,
            returned_earlier=returned,
            item_weights_oz=weights,
        )

    @activity.defn
    async def create_return_authorization(
        self, input: CreateReturnAuthorizationInput
    ) -> CreateReturnAuthorizationResult:
        """Authorize the return from the sales order; one authorization per external id."""
        with translated_failures():
            ref = await self.netsuite.create_return_authorization(
                input.erp_order_id, input.lines, external_id=input.external_id
            )
        return CreateReturnAuthorizationResult(authorization=ref)

    @activity.defn
    async def close_return_authorization(self, input: CloseReturnAuthorizationInput) -> CloseReturnAuthorizationResult:
        """Close the authorization filed under the external id; none created is success too."""
        with translated_failures():
            authorizations = await self.netsuite.list_return_authorizations(input.erp_order_id)
            ours = next((a for a in authorizations if a.external_id == input.external_id), None)
            if ours is None:
                return CloseReturnAuthorizationResult(closed=False)
            closed = await self.netsuite.close_return_authorization(ours.erp_return_authorization_id)
        return CloseReturnAuthorizationResult(closed=True, status=closed.status.value)

    @activity.defn
    async def receive_return_in_erp(self, input: ReceiveReturnInput) -> ReceiveReturnResult:
        """Record received units against the authorization at a location (an item receipt), once per external id."""
        with translated_failures():
            ref = await self.netsuite.receive_return(
                input.erp_return_authorization_id,
                input.lines,
                external_id=input.external_id,
                location_id=input.location_id,
            )
        return ReceiveReturnResult(item_receipt=ref)

    @activity.defn
    async def issue_return_credit(self, input: IssueReturnCreditInput) -> IssueReturnCreditResult:
        """Credit what was received and not yet credited (credit memo or cash refund), once per external id."""
        authorization_id = input.erp_return_authorization_id
        money = {"tax": input.tax, "restocking_fee": input.restocking_fee}
        with translated_failures():
            if input.method is RefundMethod.CASH_REFUND:
                ref = await self.netsuite.create_cash_refund(authorization_id, external_id=input.external_id, **money)
                credit = await self.netsuite.get_cash_refund(ref.erp_id)
            else:
                ref = await self.netsuite.create_credit_memo(authorization_id, external_id=input.external_id, **money)
                credit = await self.netsuite.get_credit_memo(ref.erp_id)
        return IssueReturnCreditResult(credit=credit)


class ReturnWarehouseActivities:
    """The return's steps in the warehouse: where the order shipped from, the return order, restocking."""

    def __init__(self, wms: WmsClient) -> None:
        self.wms = wms

    @activity.defn
    async def load_warehouse_order_for_return(self, input: LoadWarehouseOrderInput) -> LoadWarehouseOrderResult:
        """The original fulfillment order, the warehouse it shipped from and when it last shipped."""
        with translated_failures():
            order = await self.wms.find_order_by_reference(input.order_reference)
            if order is None:
                return LoadWarehouseOrderResult()
            shipments = await self.wms.list_shipments(order.wms_order_id)
        last = max(shipments, key=lambda s: s.shipped_at, default=None)
        warehouse_id = (last.warehouse_id if last else None) or next(iter(order.warehouse_ids), None)
        return LoadWarehouseOrderResult(
            wms_order_id=order.wms_order_id,
            warehouse_id=warehouse_id,
            last_shipped_at=last.shipped_at if last else None,
        )

    @activity.defn
    async def create_wms_return(self, input: CreateWmsReturnInput) -> CreateWmsReturnResult:
        """Create the warehouse's return order under the return's reference; a repeat finds the first."""
        with translated_failures():
            created = await self.wms.create_return(
                input.reference,
                lines=input.lines,
                original_wms_order_id=input.original_wms_order_id,
                tracking_number=input.tracking_number,
                warehouse_id=input.warehouse_id,
            )
        return CreateWmsReturnResult(wms_return=created)

    @activity.defn
    async def cancel_wms_return(self, input: CancelWmsReturnInput) -> CancelWmsReturnResult:
        """Cancel the warehouse return created under a reference; none created is success too."""
        with translated_failures():
            found = await self.wms.find_return(input.reference)
            if found is None:
                return CancelWmsReturnResult(cancelled=False)
            cancelled = await self.wms.cancel_return(found.wms_return_id)
        return CancelWmsReturnResult(cancelled=True, status=cancelled.status)

    @activity.defn
    async def restock_return(self, input: RestockReturnInput) -> RestockReturnResult:
        """Put one receipt's sellable units back into fulfillable stock; once per receipt id."""
        with translated_failures():
            stock = await self.wms.restock_return(input.wms_return_id, input.receipt)
        return RestockReturnResult(stock=stock)


class ReturnCarrierActivities:
    """The return label and its undo."""

    def __init__(self, carrier: CarrierClient, wms: WmsClient) -> None:
        self.carrier = carrier
        self.wms = wms

    @activity.defn
    async def buy_return_label(self, input: BuyReturnLabelInput) -> BuyReturnLabelResult:
        """Buy the cheapest return label from the customer to the warehouse; one label per reference."""
        with translated_failures():
            if not input.warehouse_id:
                raise ValidationRejectedError(
                    "no warehouse to return to: the warehouse has no record of the original order",
                    system=CARRIER,
                    vendor_code="NO_RETURN_WAREHOUSE",
                )
            warehouse = await self.wms.get_location(input.warehouse_id)
            # As EasyPost wants a return: the original shipment's addresses, which it swaps on the label.
            label = await self.carrier.purchase_label(
                reference=input.reference,
                ship_from=warehouse,
                ship_to=input.customer,
                parcel=input.parcel,
                is_return=True,
            )
        return BuyReturnLabelResult(label=label, warehouse=warehouse)

    @activity.defn
    async def void_return_label(self, input: VoidReturnLabelInput) -> VoidReturnLabelResult:
        """Refund the return label bought under a reference; none bought is success too."""
        with translated_failures():
            label = await self.carrier.find_label(input.reference, is_return=True)
            if label is None:
                return VoidReturnLabelResult(refund_status=None)
            refunded = await self.carrier.refund_label(label.carrier_shipment_id)
        return VoidReturnLabelResult(refund_status=refunded.refund_status)
