"""Channel steps of order to cash: tracking back to the channel, and cancelling there (Shopify, Amazon).

Each channel speaks its own protocol; the saga sees one activity per step. Shopify takes a
fulfillment with tracking and an `orderCancel` job; Amazon takes a v0 shipment confirmation and an
order-acknowledgement feed that cancels what has not shipped.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.errors import NotFoundError, ValidationRejectedError
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical import Channel, Order
from orderflow.canonical.saga import (
    CancelOnChannelInput,
    CancelOnChannelResult,
    ConfirmShipmentInput,
    ConfirmShipmentOnChannelResult,
    idempotency_key,
)

ChannelClient = ShopifyClient | AmazonClient


class ChannelActivities:
    """The saga's steps on the channel an order came from, each safe to repeat."""

    def __init__(self, channels: Mapping[Channel, ChannelClient]) -> None:
        self.channels = channels

    def _client(self, order: Order) -> ChannelClient:
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
        client = self._client(input.order)
        with translated_failures():
            if isinstance(client, AmazonClient):
                # Amazon keys a confirmation by its package reference (the shipment id): a repeat edits it.
                await client.confirm_shipment(input.order.channel_order_id, input.shipment)
                return ConfirmShipmentOnChannelResult(channel_fulfillment_id=input.shipment.shipment_id)
            ref = await client.create_fulfillment(input.order.channel_order_id, input.shipment)
        return ConfirmShipmentOnChannelResult(channel_fulfillment_id=ref.fulfillment_id)

    @activity.defn
    async def cancel_on_channel(self, input: CancelOnChannelInput) -> CancelOnChannelResult:
        """Cancel the order on the channel, refunding and restocking; already cancelled is success."""
        client = self._client(input.order)
        if isinstance(client, AmazonClient):
            with translated_failures():
                feed_id = await client.cancel_order(
                    input.order.channel_order_id,
                    reason=input.reason,
                    idempotency_key=idempotency_key(input.order.key, "cancel_on_channel"),
                )
            # The feed is processed later; its report is Amazon's record that the order was cancelled.
            return CancelOnChannelResult(cancelled=True, detail=f"cancellation feed {feed_id} submitted to Amazon")
        with translated_failures():
            try:
                job = await client.cancel_order(input.order.channel_order_id, reason="OTHER", staff_note=input.reason)
            except NotFoundError:
                # An order the channel never had (started from a file, or deleted there) has nothing
                # to cancel; parking the undo over it would only make an operator press skip.
                return CancelOnChannelResult(cancelled=False, detail="not on the channel; nothing to cancel")
        if job.already_cancelled:
            return CancelOnChannelResult(cancelled=True, detail="already cancelled on the channel")
        detail = "cancelled" if job.done else f"cancellation job {job.job_id} accepted"
        return CancelOnChannelResult(cancelled=True, detail=detail)
