"""Channel steps of order to cash: tracking back to the channel, and cancelling there (Shopify)."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.errors import NotFoundError, ValidationRejectedError
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical import Channel, Order
from orderflow.canonical.saga import (
    CancelOnChannelInput,
    CancelOnChannelResult,
    ConfirmShipmentInput,
    ConfirmShipmentOnChannelResult,
)


class ChannelActivities:
    """The saga's steps on the channel an order came from, each safe to repeat."""

    def __init__(self, channels: Mapping[Channel, ShopifyClient]) -> None:
        self.channels = channels

    def _client(self, order: Order) -> ShopifyClient:
        client = self.channels.get(order.channel)
        if client is None:
            raise ValidationRejectedError(
                f"this worker has no client for channel {order.channel.value}",
                system=order.channel.value,
                vendor_code="CHANNEL_NOT_CONFIGURED",
            )
        return client

    @activity.defn
    async def confirm_shipment_on_channel(self, input: ConfirmShipmentInput) -> ConfirmShipmentOnChannelResult:
        """Record the shipment and its tracking on the channel; a repeat finds the fulfillment by tracking number."""
        with translated_failures():
            ref = await self._client(input.order).create_fulfillment(input.order.channel_order_id, input.shipment)
        return ConfirmShipmentOnChannelResult(channel_fulfillment_id=ref.fulfillment_id)

    @activity.defn
    async def cancel_on_channel(self, input: CancelOnChannelInput) -> CancelOnChannelResult:
        """Cancel the order on the channel, refunding and restocking; already cancelled is success."""
        with translated_failures():
            try:
                job = await self._client(input.order).cancel_order(
                    input.order.channel_order_id, reason="OTHER", staff_note=input.reason
                )
            except NotFoundError:
                # An order the channel never had (started from a file, or deleted there) has nothing
                # to cancel; parking the undo over it would only make an operator press skip.
                return CancelOnChannelResult(cancelled=False, detail="not on the channel; nothing to cancel")
        if job.already_cancelled:
            return CancelOnChannelResult(cancelled=True, detail="already cancelled on the channel")
        detail = "cancelled" if job.done else f"cancellation job {job.job_id} accepted"
        return CancelOnChannelResult(cancelled=True, detail=detail)
