"""Carrier steps of order to cash: buy the label, void it (EasyPost-shaped carrier, ship-from from the WMS)."""

from __future__ import annotations

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.carrier import SYSTEM, CarrierClient
from orderflow.adapters.errors import ValidationRejectedError
from orderflow.adapters.wms import WmsClient
from orderflow.canonical.saga import BuyLabelInput, BuyLabelResult, VoidLabelInput, VoidLabelResult


class CarrierActivities:
    """The saga's label purchase and its undo, each safe to repeat."""

    def __init__(self, carrier: CarrierClient, wms: WmsClient) -> None:
        self.carrier = carrier
        self.wms = wms

    @activity.defn
    async def buy_label(self, input: BuyLabelInput) -> BuyLabelResult:
        """Rate-shop and buy the cheapest label from the allocated warehouse; one label per reference."""
        with translated_failures():
            if not input.ship_from_warehouse_id:
                raise ValidationRejectedError(
                    "no warehouse to ship from: the order has no allocated line",
                    system=SYSTEM,
                    vendor_code="NO_SHIP_FROM",
                )
            ship_from = await self.wms.get_location(input.ship_from_warehouse_id)
            label = await self.carrier.purchase_label(
                reference=input.reference,
                ship_from=ship_from,
                ship_to=input.ship_to,
                parcel=input.parcel,
                max_delivery_days=input.max_delivery_days,
            )
        return BuyLabelResult(label=label, ship_from=ship_from)

    @activity.defn
    async def void_label(self, input: VoidLabelInput) -> VoidLabelResult:
        """Refund the label bought under a reference; no label bought is success too."""
        with translated_failures():
            label = await self.carrier.find_label(input.reference)
            if label is None:
                return VoidLabelResult(refund_status=None)
            refunded = await self.carrier.refund_label(label.carrier_shipment_id)
        return VoidLabelResult(refund_status=refunded.refund_status)
