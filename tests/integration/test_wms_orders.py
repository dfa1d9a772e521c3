"""The WMS adapter against the ShipBob-shaped sandbox over real HTTP: orders, stock, shipments, cancels."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import (
    fulfillment_request,
    plentiful_skus,
    scarce_sku,
    split_only_sku,
    stock_cell,
    vendor_client,
)

from orderflow.adapters.errors import NotFoundError, ValidationRejectedError
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import CancellationOutcome, FulfillmentStatus
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def wms(http: httpx.AsyncClient, settings: Settings) -> WmsClient:
    """The adapter as the worker builds it, pointed at the test sandbox."""
    return WmsClient(http, settings.wms)


async def state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/state/wms")
    response.raise_for_status()
    return dict(response.json())


async def ship(settings: Settings, wms_order_id: str, *, shipment_id: str | None = None) -> None:
    """Force ShipBob's sandbox to label a whole order (or one shipment of it)."""
    target: dict[str, Any] = {"shipment_id": shipment_id} if shipment_id else {"order_id": wms_order_id}
    async with vendor_client(settings) as vendor:
        response = await vendor.post("/simulate/shipment", json={**target, "simulation": {"action": "ShipOrder"}})
        assert response.status_code == 200, response.text


async def test_creating_an_order_commits_stock_in_one_centre(
    wms: WmsClient, sandbox: httpx.AsyncClient, settings: Settings
) -> None:
    first, second = plentiful_skus(2)
    before = await state(sandbox)

    order = await wms.create_order(fulfillment_request("order:shopify:1001", [(first, 3), (second, 2)]))

    assert order.status is FulfillmentStatus.PROCESSING
    assert order.reference == "order:shopify:1001"
    assert order.warehouse_ids == ["8"]
    assert {(line.sku, line.quantity) for line in order.lines} == {(first, 3), (second, 2)}
    after = await state(sandbox)
    for sku, qty in ((first, 3), (second, 2)):
        assert stock_cell(after, sku, 8)["committed"] == stock_cell(before, sku, 8)["committed"] + qty
        assert stock_cell(after, sku, 8)["fulfillable"] == stock_cell(before, sku, 8)["fulfillable"] - qty
        assert stock_cell(after, sku, 8)["on_hand"] == stock_cell(before, sku, 8)["on_hand"]
    levels = await wms.get_stock([first], warehouse_id="8")
    assert [(lv.sku, lv.warehouse_id, lv.committed) for lv in levels] == [(first, "8", 3)]


async def test_a_repeated_create_returns_the_existing_order_and_commits_once(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    request = fulfillment_request("order:shopify:1002", [(sku, 4)])

    first = await wms.create_order(request)
    again = await wms.create_order(request)

    assert again.wms_order_id == first.wms_order_id
    snapshot = await state(sandbox)
    assert [o["reference_id"] for o in snapshot["orders"]] == ["order:shopify:1002"]
    assert stock_cell(snapshot, sku, 8)["committed"] == 4


async def test_a_pinned_warehouse_is_honoured(wms: WmsClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)

    order = await wms.create_order(fulfillment_request("order:shopify:1003", [(sku, 1)], warehouse_id="11"))

    assert order.warehouse_ids == ["11"]
    snapshot = await state(sandbox)
    assert stock_cell(snapshot, sku, 11)["committed"] == 1
    assert stock_cell(snapshot, sku, 8)["committed"] == 0


async def test_an_order_no_single_centre_can_fill_is_split_across_centres(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    sku, qty = split_only_sku()

    order = await wms.create_order(fulfillment_request("order:shopify:1004", [(sku, qty)]))

    assert order.status is FulfillmentStatus.PROCESSING
    assert order.warehouse_ids == ["11", "8"]
    assert len(order.shipment_ids) == 2
    snapshot = await state(sandbox)
    assert stock_cell(snapshot, sku, 8)["committed"] + stock_cell(snapshot, sku, 11)["committed"] == qty


async def test_a_stock_out_puts_the_shipment_in_exception_and_commits_nothing(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    sku = scarce_sku()
    await wms.subscribe_webhooks("http://127.0.0.1:9/unreachable", ["order.shipment.exception"])

    order = await wms.create_order(fulfillment_request("order:shopify:1005", [(sku, 10)]))

    assert order.status is FulfillmentStatus.EXCEPTION
    assert order.exception_reason is not None and sku in order.exception_reason
    snapshot = await state(sandbox)
    assert stock_cell(snapshot, sku, 8)["committed"] == 0
    assert stock_cell(snapshot, sku, 11)["committed"] == 0
    deliveries = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json()
    assert [d["topic"] for d in deliveries] == ["order.shipment.exception"]


async def test_an_unknown_sku_is_created_by_the_wms_and_goes_to_exception(wms: WmsClient) -> None:
    order = await wms.create_order(fulfillment_request("order:shopify:1006", [("NEW-THING-1", 1)]))

    assert order.status is FulfillmentStatus.EXCEPTION
    assert order.exception_reason is not None and "NEW-THING-1" in order.exception_reason


async def test_an_unknown_location_is_rejected_with_field_errors(wms: WmsClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)

    with pytest.raises(ValidationRejectedError) as caught:
        await wms.create_order(fulfillment_request("order:shopify:1007", [(sku, 1)], warehouse_id="99"))

    assert caught.value.status_code == 400
    assert "location_id" in caught.value.details
    assert (await state(sandbox))["orders"] == []


async def test_orders_are_read_by_id_and_by_reference(wms: WmsClient) -> None:
    (sku,) = plentiful_skus(1)
    created = await wms.create_order(fulfillment_request("order:shopify:1008", [(sku, 1)]))

    assert (await wms.get_order(created.wms_order_id)) == created
    assert (await wms.find_order_by_reference("order:shopify:1008")) == created
    assert await wms.find_order_by_reference("order:shopify:nope") is None
    with pytest.raises(NotFoundError):
        await wms.get_order("999")


async def test_cancelling_before_a_label_releases_stock_and_is_safe_to_repeat(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    order = await wms.create_order(fulfillment_request("order:shopify:1009", [(sku, 5)]))

    first = await wms.cancel_order(order.wms_order_id)
    again = await wms.cancel_order(order.wms_order_id)

    assert first.outcome is CancellationOutcome.CANCELLED
    assert again.outcome is CancellationOutcome.CANCELLED
    snapshot = await state(sandbox)
    assert stock_cell(snapshot, sku, 8)["committed"] == 0
    assert (await wms.get_order(order.wms_order_id)).status is FulfillmentStatus.CANCELLED


async def test_cancelling_after_the_label_is_refused(
    wms: WmsClient, sandbox: httpx.AsyncClient, settings: Settings
) -> None:
    (sku,) = plentiful_skus(1)
    before = stock_cell(await state(sandbox), sku, 8)
    order = await wms.create_order(fulfillment_request("order:shopify:1010", [(sku, 2)]))
    await ship(settings, order.wms_order_id)

    result = await wms.cancel_order(order.wms_order_id)

    assert result.outcome is CancellationOutcome.REFUSED
    assert result.reason is not None and "label" in result.reason
    after = stock_cell(await state(sandbox), sku, 8)
    assert after["on_hand"] == before["on_hand"] - 2
    assert after["committed"] == 0
    assert (await wms.get_order(order.wms_order_id)).status is FulfillmentStatus.FULFILLED


async def test_cancelling_a_split_order_with_one_parcel_gone_is_partial(
    wms: WmsClient, sandbox: httpx.AsyncClient, settings: Settings
) -> None:
    sku, qty = split_only_sku()
    order = await wms.create_order(fulfillment_request("order:shopify:1011", [(sku, qty)]))
    await ship(settings, order.wms_order_id, shipment_id=order.shipment_ids[0])

    result = await wms.cancel_order(order.wms_order_id)

    assert result.outcome is CancellationOutcome.PARTIAL
    snapshot = await state(sandbox)
    statuses = sorted(s["status"] for s in snapshot["orders"][0]["shipments"])
    assert statuses == ["Cancelled", "LabeledCreated"]
    assert stock_cell(snapshot, sku, 8)["committed"] + stock_cell(snapshot, sku, 11)["committed"] == 0


async def test_shipments_appear_with_tracking_and_lines_once_labelled(wms: WmsClient, settings: Settings) -> None:
    first, second = plentiful_skus(2)
    order = await wms.create_order(fulfillment_request("order:shopify:1012", [(first, 1), (second, 3)]))
    assert await wms.list_shipments(order.wms_order_id) == []

    await ship(settings, order.wms_order_id)
    (shipment,) = await wms.list_shipments(order.wms_order_id)

    assert shipment.wms_order_id == order.wms_order_id
    assert shipment.reference == "order:shopify:1012"
    assert shipment.warehouse_id == "8"
    assert shipment.tracking.carrier == "USPS" and len(shipment.tracking.number) == 22
    assert {(line.sku, line.quantity) for line in shipment.lines} == {(first, 1), (second, 3)}


async def test_the_engine_ships_completes_and_delivers_on_the_sandbox_clock(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 3600})
    try:
        await _ship_deliver_on_the_clock(wms, sandbox, sku)
    finally:
        # A sandbox reset keeps the demo settings, so put them back for the tests that follow.
        await sandbox.put("/sandbox/demo", json={})


async def _ship_deliver_on_the_clock(wms: WmsClient, sandbox: httpx.AsyncClient, sku: str) -> None:
    order = await wms.create_order(fulfillment_request("order:shopify:1013", [(sku, 1)]))
    await sandbox.post("/sandbox/tick")
    assert (await wms.get_order(order.wms_order_id)).status is FulfillmentStatus.PROCESSING

    await sandbox.post("/sandbox/clock/advance", json={"seconds": 3601})
    await sandbox.post("/sandbox/tick")
    shipment = (await state(sandbox))["orders"][0]["shipments"][0]
    assert shipment["status"] == "LabeledCreated" and shipment["tracking"]["tracking_number"]

    await sandbox.post("/sandbox/clock/advance", json={"seconds": 61})
    await sandbox.post("/sandbox/tick")
    assert (await state(sandbox))["orders"][0]["shipments"][0]["status"] == "Completed"

    await sandbox.post("/sandbox/clock/advance", json={"seconds": 600})
    await sandbox.post("/sandbox/tick")
    assert (await state(sandbox))["orders"][0]["shipments"][0]["delivered"] is True
    assert (await wms.get_order(order.wms_order_id)).status is FulfillmentStatus.FULFILLED


async def test_stock_covers_every_sku_and_centre_across_pages(wms: WmsClient, settings: Settings) -> None:
    levels = await wms.get_stock()

    assert len(levels) == 120
    assert {lv.warehouse_id for lv in levels} == {"8", "11"}
    async with vendor_client(settings) as vendor:
        page = (await vendor.get("/inventory-level/locations", params={"PageSize": 25})).json()
        seen = len(page["items"])
        while page["next"]:
            page = (await vendor.get(page["next"])).json()
            seen += len(page["items"])
    assert seen == 60


async def test_the_order_list_pages_and_filters_by_reference(wms: WmsClient, settings: Settings) -> None:
    (sku,) = plentiful_skus(1)
    for n in range(3):
        await wms.create_order(fulfillment_request(f"order:shopify:120{n}", [(sku, 1)]))

    async with vendor_client(settings) as vendor:
        first = await vendor.get("/order", params={"Limit": 2, "SortOrder": "Oldest"})
        second = await vendor.get(first.headers["next-page"])
        filtered = await vendor.get("/order", params={"ReferenceIds": "order:shopify:1200,order:shopify:1202"})

    assert [o["reference_id"] for o in first.json()] == ["order:shopify:1200", "order:shopify:1201"]
    assert (first.headers["total-count"], first.headers["total-pages"]) == ("3", "2")
    assert [o["reference_id"] for o in second.json()] == ["order:shopify:1202"]
    assert "next-page" not in second.headers
    assert sorted(o["reference_id"] for o in filtered.json()) == ["order:shopify:1200", "order:shopify:1202"]
