"""ShipBob returns in the sandbox: create, change, cancel, receive, and what receiving does to stock."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, stock_cell, vendor_client

from orderflow.adapters.wms import WmsClient
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


async def shipped_order(http: httpx.AsyncClient, settings: Settings, sku: str, qty: int) -> str:
    """A labelled order's shipment id, ready to be returned."""
    wms = WmsClient(http, settings.wms)
    order = await wms.create_order(fulfillment_request(f"order:shopify:rma-{sku}", [(sku, qty)]))
    async with vendor_client(settings) as vendor:
        await vendor.post(
            "/simulate/shipment", json={"order_id": order.wms_order_id, "simulation": {"action": "ShipOrder"}}
        )
    return order.shipment_ids[0]


def return_body(reference: str, shipment_id: str, sku: str, qty: int, action: str = "Restock") -> dict[str, Any]:
    return {
        "reference_id": reference,
        "fulfillment_center": {"id": 8},
        "original_shipment_id": int(shipment_id),
        "tracking_number": "1Z999",
        "inventory": [{"id": CATALOG_BY_SKU[sku].wms_inventory_id, "quantity": qty, "requested_action": action}],
    }


async def test_a_received_return_restocks_and_reports_each_stage(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    shipment_id = await shipped_order(http, settings, sku, 3)
    await sandbox.post("/sandbox/webhooks/subscriptions/wms", json={"topics": ["*"], "url": "http://127.0.0.1:9/x"})
    on_hand_after_shipping = stock_cell((await sandbox.get("/sandbox/state/wms")).json(), sku, 8)["on_hand"]

    async with vendor_client(settings) as vendor:
        created = await vendor.post("/return", json=return_body("RMA-1", shipment_id, sku, 2))
        duplicate = await vendor.post("/return", json=return_body("RMA-1", shipment_id, sku, 2))
        return_id = created.json()["id"]
        damaged = {"inventory_id": CATALOG_BY_SKU[sku].wms_inventory_id, "action": "Dispose", "quantity": 1}
        restocked = {**damaged, "action": "Restock"}
        received = await vendor.post("/simulate/return", json={"return_id": return_id, "actions": [restocked, damaged]})
        fetched = (await vendor.get(f"/return/{return_id}")).json()

    assert created.status_code == 201 and created.json()["status"] == "Awaiting Arrival"
    assert created.json()["store_order_id"] == f"order:shopify:rma-{sku}"
    assert duplicate.status_code == 422 and "RMA-1" in duplicate.json()["message"]
    assert received.json()["status"] == "Completed"
    assert [h["status"] for h in fetched["status_history"]] == [
        "Awaiting Arrival",
        "Arrived",
        "Processing",
        "Completed",
    ]
    assert [(a["action"], a["quantity_processed"]) for a in fetched["inventory"][0]["action_taken"]] == [
        ("Restock", 1),
        ("Dispose", 1),
    ]
    state = (await sandbox.get("/sandbox/state/wms")).json()
    assert stock_cell(state, sku, 8)["on_hand"] == on_hand_after_shipping + 1
    topics = [d["topic"] for d in (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json()]
    assert [t for t in topics if t.startswith("return.")] == [
        "return.created",
        "return.updated",
        "return.updated",
        "return.completed",
    ]


async def test_a_return_can_change_or_be_cancelled_only_before_it_arrives(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    (sku,) = plentiful_skus(1)
    shipment_id = await shipped_order(http, settings, sku, 2)
    async with vendor_client(settings) as vendor:
        first = (await vendor.post("/return", json=return_body("RMA-2", shipment_id, sku, 1))).json()
        changed = await vendor.put(
            f"/return/{first['id']}", json=return_body("RMA-2", shipment_id, sku, 2, "Quarantine")
        )
        cancelled = await vendor.post(f"/return/{first['id']}:cancel")
        second = (await vendor.post("/return", json=return_body("RMA-3", shipment_id, sku, 1))).json()
        await vendor.post("/simulate/return", json={"return_id": second["id"], "to": "Arrived"})
        too_late_change = await vendor.put(f"/return/{second['id']}", json=return_body("RMA-3", shipment_id, sku, 2))
        too_late_cancel = await vendor.post(f"/return/{second['id']}:cancel")
        listed = (await vendor.get("/return", params={"ReferenceIds": "RMA-2,RMA-3"})).json()["items"]

    assert changed.status_code == 200
    assert changed.json()["inventory"][0]["action_requested"]["action"] == "Quarantine"
    assert cancelled.json()["status"] == "Cancelled"
    assert too_late_change.status_code == 422
    assert too_late_cancel.status_code == 400
    assert sorted((r["reference_id"], r["status"]) for r in listed) == [("RMA-2", "Cancelled"), ("RMA-3", "Arrived")]
