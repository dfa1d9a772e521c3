"""Publishing availability against the sandbox: the WMS's fulfillable units become Amazon's sellable quantity."""

from __future__ import annotations

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.sample import order, plentiful, state
from orderflow.activities import WarehouseActivities
from orderflow.activities.availability import AvailabilityActivities
from orderflow.adapters.amazon import AmazonClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import Channel
from orderflow.canonical.saga import AllocateInput, PublishAvailabilityInput
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


def fulfillable(wms_state: dict[str, object], sku: str) -> int:
    """The units of a SKU free to ship across every warehouse, as the sandbox WMS holds them."""
    rows = wms_state["stock"]
    assert isinstance(rows, list)
    return sum(int(row["fulfillable"]) for row in rows if row["sku"] == sku)


async def test_a_reservation_lowers_what_amazon_may_sell_to_what_the_warehouse_can_still_ship(
    env: ActivityEnvironment,
    settings: Settings,
    http: httpx.AsyncClient,
    wms: WmsClient,
    warehouse: WarehouseActivities,
    sandbox: httpx.AsyncClient,
) -> None:
    availability = AvailabilityActivities(wms, {Channel.AMAZON: AmazonClient(http, settings.amazon)})
    first, second = plentiful(2)
    sale = order("6101", [(first, 2), (second, 1)])
    skus = sorted({line.sku for line in sale.lines})
    before = {sku: fulfillable(await state(sandbox, "wms"), sku) for sku in skus}
    reserved = await env.run(warehouse.allocate, AllocateInput(reference="OF-availability-1", order=sale))
    assert reserved.allocation.status.value == "allocated"

    result = await env.run(availability.publish_availability, PublishAvailabilityInput(skus=[*skus, "NOT-LISTED-1"]))

    after = await state(sandbox, "wms")
    wanted = {sku: fulfillable(after, sku) for sku in skus}
    ordered = {line.sku: line.quantity for line in sale.lines}
    assert wanted == {sku: before[sku] - ordered[sku] for sku in skus}
    assert result.published == {"amazon": wanted}
    # A SKU Amazon has no listing for is left alone, not an error: not every SKU is sold there.
    assert result.unlisted == {"amazon": ["NOT-LISTED-1"]}
    listings = (await state(sandbox, "amazon"))["listings"]
    assert {sku: listings[sku] for sku in skus} == wanted
