"""The WMS simulator's reservation extension and ship-from locations, over raw HTTP and through the adapter."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from contracts.shipbob import assert_conforms, response_schema
from contracts.wms_sandbox import fulfillment_request, scarce_sku, vendor_client

from activities.sample import label, plentiful, state, stock
from orderflow.adapters.wms import WmsClient, order_payload
from orderflow.canonical import AllocationLine, AllocationStatus
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


def items(*lines: tuple[str, int, int | None]) -> list[dict[str, Any]]:
    """Reservation items: (SKU, quantity, location or None)."""
    return [
        {"sku": sku, "quantity": qty, **({"location_id": loc} if loc is not None else {})} for sku, qty, loc in lines
    ]


async def test_a_reservation_commits_stock_and_a_repeat_returns_it(
    settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    before = await state(sandbox, "wms")
    body = {"reference_id": "OF-shopify-9001", "items": items((sku, 4, 11))}

    async with vendor_client(settings) as vendor:
        created = await vendor.post("/inventory-reservation", json=body)
        repeated = await vendor.post("/inventory-reservation", json=body)
        listed = await vendor.get("/inventory-reservation", params={"ReferenceIds": "OF-shopify-9001"})

    assert (created.status_code, repeated.status_code) == (201, 200)
    assert repeated.json()["id"] == created.json()["id"]
    assert created.json()["status"] == "Active"
    assert [r["id"] for r in listed.json()["items"]] == [created.json()["id"]]
    after = await state(sandbox, "wms")
    assert stock(after, sku, 11)["committed"] == stock(before, sku, 11)["committed"] + 4
    assert stock(after, sku, 11)["fulfillable"] == stock(before, sku, 11)["fulfillable"] - 4


async def test_short_stock_reserves_nothing_and_names_the_short_skus(
    settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    scarce = scarce_sku()
    before = await state(sandbox, "wms")

    async with vendor_client(settings) as vendor:
        refused = await vendor.post(
            "/inventory-reservation",
            json={"reference_id": "OF-shopify-9002", "items": items((sku, 1, None), (scarce, 9, None))},
        )

    assert refused.status_code == 422
    problem = refused.json()
    assert problem["title"] == "Insufficient stock."
    assert scarce in problem["detail"] and sku not in problem["detail"]
    assert list(problem["errors"]) == ["items[1].quantity"]
    assert [(s["sku"], s["requested"]) for s in problem["short_items"]] == [(scarce, 9)]
    after = await state(sandbox, "wms")
    assert after["stock"] == before["stock"] and after["reservations"] == []


async def test_bad_reservation_bodies_are_400s_with_the_fields(settings: Settings) -> None:
    async with vendor_client(settings) as vendor:
        refused = await vendor.post(
            "/inventory-reservation", json={"items": [{"sku": "NOPE", "quantity": 0, "location_id": 3}]}
        )
        unauthorised = await vendor.post(
            "/inventory-reservation",
            json={"reference_id": "x", "items": []},
            headers={"Authorization": "Bearer wrong"},
        )

    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {
        "reference_id",
        "items[0].sku",
        "items[0].quantity",
        "items[0].location_id",
    }
    assert unauthorised.status_code == 401


async def test_releasing_gives_stock_back_once_and_an_order_consumes_a_live_reservation(
    settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful(2)
    before = await state(sandbox, "wms")
    async with vendor_client(settings) as vendor:
        held = (
            await vendor.post(
                "/inventory-reservation", json={"reference_id": "OF-shopify-9003", "items": items((first, 2, 8))}
            )
        ).json()
        released = await vendor.post(f"/inventory-reservation/{held['id']}:release")
        again = await vendor.post(f"/inventory-reservation/{held['id']}:release")
        assert stock(await state(sandbox, "wms"), first, 8) == stock(before, first, 8)

        live = (
            await vendor.post(
                "/inventory-reservation", json={"reference_id": "OF-shopify-9004", "items": items((second, 3, 11))}
            )
        ).json()
        reserved = await state(sandbox, "wms")
        created = await vendor.post("/order", json=order_payload(fulfillment_request("OF-shopify-9004", [(second, 3)])))
        after_release = await vendor.post(f"/inventory-reservation/{live['id']}:release")

    assert released.json()["status"] == again.json()["status"] == "Released"
    assert created.status_code == 201, created.text
    (shipment,) = created.json()["shipments"]
    # The reservation chose Moreno Valley; the order ships from there, with the reserved commitment.
    assert shipment["location"]["id"] == 11
    after = await state(sandbox, "wms")
    assert stock(after, second, 11)["committed"] == stock(reserved, second, 11)["committed"] == 3
    consumed = next(r for r in after["reservations"] if r["id"] == live["id"])
    assert consumed["status"] == "Consumed" and consumed["order_id"] == created.json()["id"]
    # Releasing a consumed reservation changes nothing: the order owns the stock.
    assert after_release.json()["status"] == "Consumed"
    assert stock(after, second, 11)["committed"] == 3


async def test_an_order_that_differs_from_its_reservation_is_refused_and_the_reservation_stays(
    settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    async with vendor_client(settings) as vendor:
        await vendor.post(
            "/inventory-reservation", json={"reference_id": "OF-shopify-9005", "items": items((sku, 2, 8))}
        )
        refused = await vendor.post("/order", json=order_payload(fulfillment_request("OF-shopify-9005", [(sku, 5)])))

    assert refused.status_code == 422
    assert sku in refused.json()["detail"]
    after = await state(sandbox, "wms")
    assert after["orders"] == [] and [r["status"] for r in after["reservations"]] == ["Active"]


async def test_locations_and_an_order_with_our_label_match_shipbobs_schemas(settings: Settings) -> None:
    (sku,) = plentiful(1)
    body = order_payload(fulfillment_request("OF-shopify-9006", [(sku, 1)]), label=label())

    assert_conforms("Orders.CreateOrderModel", json.loads(json.dumps(body)))
    async with vendor_client(settings) as vendor:
        locations = await vendor.get("/location")
        order = await vendor.post("/order", json=body)

    assert_conforms(response_schema("/2026-01/location", "get", 200), locations.json())
    assert {loc["id"] for loc in locations.json()} == {8, 11}
    assert_conforms(response_schema("/2026-01/order", "post", 201), order.json())
    tags = {t["name"]: t["value"] for t in order.json()["tags"]}
    assert tags["label_tracking_number"] == "9400111899223344556677" and tags["label_carrier"] == "USPS"


async def test_the_adapter_reserves_finds_releases_and_reports_a_shortfall(
    wms: WmsClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    wanted = [AllocationLine(sku=sku, warehouse_id="11", quantity_requested=2, quantity_allocated=2)]
    short = [AllocationLine(sku=scarce_sku(), warehouse_id="8", quantity_requested=9, quantity_allocated=9)]

    allocation = await wms.reserve_stock("OF-shopify-9007", wanted)
    found = await wms.find_reservation("OF-shopify-9007")
    backordered = await wms.reserve_stock("OF-shopify-9008", short)
    released = await wms.release_reservation("OF-shopify-9007")
    gone = await wms.find_reservation("OF-shopify-9007")
    location = await wms.get_location("11")

    assert allocation.status is AllocationStatus.ALLOCATED and allocation.order_key == "order:shopify:9007"
    assert found == allocation
    assert backordered.status is AllocationStatus.BACKORDERED
    assert [(ln.sku, ln.shortfall) for ln in backordered.lines] == [(scarce_sku(), 9)]
    assert released and gone is None
    assert (location.city, location.region, location.country) == ("Moreno Valley", "CA", "US")
    assert [r["reference_id"] for r in (await state(sandbox, "wms"))["reservations"]] == ["OF-shopify-9007"]


async def test_a_reservation_whose_answer_was_lost_is_read_back_not_made_twice(
    wms: WmsClient, sandbox: httpx.AsyncClient, settings: Settings, http: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    impatient = WmsClient(http, settings.wms.model_copy(update={"timeout_seconds": 0.3}))
    rule = {"system": "wms", "kind": "timeout_after_commit", "path": "*inventory-reservation", "method": "POST",
            "times": 1, "hold_seconds": 1.0}  # fmt: skip
    assert (await sandbox.post("/sandbox/faults", json=rule)).status_code == 201
    wanted = [AllocationLine(sku=sku, warehouse_id="8", quantity_requested=3, quantity_allocated=3)]

    allocation = await impatient.reserve_stock("OF-shopify-9009", wanted)

    assert allocation.status is AllocationStatus.ALLOCATED
    assert (await sandbox.get("/sandbox/faults")).json()[0]["fired"] == 1
    after = await state(sandbox, "wms")
    assert len(after["reservations"]) == 1
    assert stock(after, sku, 8)["committed"] == 3
