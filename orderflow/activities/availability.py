"""Publishing availability: what the warehouse can still ship, told to the channels that sell from it.

Stock is shared: an allocation for a Shopify order leaves fewer units for Amazon buyers too, so
after the sagas reserve or give back stock they tell every channel that keeps its own count of
merchant-fulfilled units (Amazon, through the Listings Items API) what is left. The count is the
warehouse's fulfillable quantity, read fresh, so a publication that arrives late or twice still
says the truth of its moment. Shopify is not told: its inventory lives at its own locations.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.errors import ValidationRejectedError
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel
from orderflow.canonical.saga import PublishAvailabilityInput, PublishAvailabilityResult

# Amazon's issue code for a SKU the seller has no listing for: not every SKU is sold there.
NO_LISTING = "4000001"


def _unlisted(error: ValidationRejectedError) -> bool:
    issues = error.details.get("issues") if isinstance(error.details, dict) else None
    return any(isinstance(i, dict) and i.get("code") == NO_LISTING for i in issues or [])


class AvailabilityActivities:
    """The step that tells the channels how much of a SKU the warehouse can still ship."""

    def __init__(self, wms: WmsClient, channels: Mapping[Channel, AmazonClient]) -> None:
        self.wms = wms
        self.channels = channels

    @activity.defn
    async def publish_availability(self, input: PublishAvailabilityInput) -> PublishAvailabilityResult:
        """Read the SKUs' fulfillable units in the warehouse and set each channel's sellable quantity to them."""
        skus = sorted(set(input.skus))
        published: dict[str, dict[str, int]] = {}
        unlisted: dict[str, list[str]] = {}
        with translated_failures():
            levels = await self.wms.get_stock(skus)
            free = dict.fromkeys(skus, 0)
            for level in levels:
                free[level.sku] = free.get(level.sku, 0) + level.fulfillable
            for channel, client in self.channels.items():
                for sku in skus:
                    try:
                        await client.update_availability(sku, free[sku])
                    except ValidationRejectedError as error:
                        if not _unlisted(error):
                            raise
                        unlisted.setdefault(channel.value, []).append(sku)
                        continue
                    published.setdefault(channel.value, {})[sku] = free[sku]
        return PublishAvailabilityResult(published=published, unlisted=unlisted)
