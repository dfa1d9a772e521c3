"""The WMS sandbox's answers, and the adapter's requests, checked against ShipBob's OpenAPI schemas."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from contracts.shipbob import assert_conforms, response_schema, schema_errors
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, scarce_sku, vendor_client

from orderflow.adapters.wms import order_payload
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


def test_the_adapters_create_order_body_matches_the_spec() -> None:
    (sku,) = plentiful_skus(1)
    request = fulfillment_request("order:shopify:6000", [(sku, 2)], warehouse_id="11")

    assert_conforms("Orders.CreateOrderModel", json.loads(json.dumps(order_payload(request))))


def test_the_checker_catches_a_broken_order() -> None:
    assert schema_errors("Orders.OrderViewModel", {"id": "not-a-number", "status": "Teleported"})


async def test_every_answer_matches_shipbobs_schema(settings: Settings, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)
    body: dict[str, Any] = order_payload(fulfillment_request("order:shopify:6001", [(sku, 2)]))
    checked: list[str] = []

    def check(path: str, method: str, response: httpx.Response) -> Any:
        assert response.is_success, response.text
        schema = response_schema(f"/2026-01{path}", method, response.status_code)
        assert_conforms(schema, response.json())
        checked.append(schema)
        return response.json()

    async with vendor_client(settings) as vendor:
        hook = check(
            "/webhook",
            "post",
            await vendor.post("/webhook", json={"topics": ["order.shipped"], "url": "http://127.0.0.1:9/h"}),
        )
        check("/webhook", "get", await vendor.get("/webhook"))
        order = check("/order", "post", await vendor.post("/order", json=body))
        exception_body = order_payload(fulfillment_request("order:shopify:6002", [(scarce_sku(), 9)]))
        check("/order", "post", await vendor.post("/order", json=exception_body))
        check("/order/{orderId}", "get", await vendor.get(f"/order/{order['id']}"))
        check("/order", "get", await vendor.get("/order", params={"ReferenceIds": "order:shopify:6001"}))
        shipped = {"shipment_id": str(order["shipments"][0]["id"]), "simulation": {"action": "ShipOrder"}}
        check("/simulate/shipment", "post", await vendor.post("/simulate/shipment", json=shipped))
        shipments = check("/order/{orderId}/shipment", "get", await vendor.get(f"/order/{order['id']}/shipment"))
        check("/order/{orderId}:cancel", "post", await vendor.post(f"/order/{order['id']}:cancel"))
        check(
            "/inventory-level/locations", "get", await vendor.get("/inventory-level/locations", params={"PageSize": 5})
        )
        inventory_id = order["products"][0]["id"]
        item = f"/inventory-level/{inventory_id}/locations"
        check("/inventory-level/{inventoryId}/locations", "get", await vendor.get(item))
        rma = {
            "reference_id": "RMA-6001",
            "fulfillment_center": {"id": 8},
            "original_shipment_id": shipments[0]["id"],
            "inventory": [{"id": inventory_id, "quantity": 1, "requested_action": "Restock"}],
        }
        created = check("/return", "post", await vendor.post("/return", json=rma))
        await vendor.post("/simulate/return", json={"return_id": created["id"]})
        check("/return/{id}", "get", await vendor.get(f"/return/{created['id']}"))
        check("/return", "get", await vendor.get("/return"))
        await vendor.delete(f"/webhook/{hook['id']}")

    assert shipments[0]["tracking"]["tracking_number"]
    deliveries = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json()
    shipped_events = [json.loads(d["body"]) for d in deliveries if d["topic"] == "order.shipped"]
    assert len(shipped_events) == 1
    assert_conforms("Orders.OrderViewModel", shipped_events[0])
    assert len(checked) == 14
