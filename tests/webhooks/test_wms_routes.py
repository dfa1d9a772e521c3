"""Warehouse webhooks into the service: each shipped parcel, as the sandbox signs it, is signalled to its saga."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, split_only_sku, vendor_client

from orderflow.adapters.wms import WmsClient, shipment_from_webhook
from orderflow.canonical.saga import ShipmentConfirmed, order_reference
from orderflow.settings import Settings

from .conftest import NOWHERE, WebhookHarness, delivered

pytestmark = pytest.mark.integration


async def shipped_webhooks(
    sandbox: httpx.AsyncClient,
    http: httpx.AsyncClient,
    settings: Settings,
    reference: str,
    lines: list[tuple[str, int]],
) -> list[dict[str, Any]]:
    """Create a warehouse order, force it to ship, and return the signed `order.shipped` deliveries it caused."""
    await sandbox.post("/sandbox/webhooks/subscriptions/wms", json={"topics": ["order.shipped"], "url": NOWHERE})
    order = await WmsClient(http, settings.wms).create_order(fulfillment_request(reference, lines))
    async with vendor_client(settings) as vendor:
        forced = await vendor.post(
            "/simulate/shipment", json={"order_id": order.wms_order_id, "simulation": {"action": "ShipOrder"}}
        )
        assert forced.status_code == 200
    return await delivered(sandbox, "wms", lambda d: d["topic"] == "order.shipped", count=len(order.warehouse_ids) or 1)


async def post_delivery(
    harness: WebhookHarness, delivery: dict[str, Any], *, raw: bytes | None = None
) -> httpx.Response:
    body = raw if raw is not None else delivery["body"].encode()
    return await harness.app.post("/webhooks/wms", content=body, headers=delivery["headers_sent"])


async def test_a_split_order_signals_each_shipped_parcel_with_its_lines_and_tracking(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    key = await harness.start_saga()
    sku, quantity = split_only_sku()
    deliveries = await shipped_webhooks(sandbox, http, settings, order_reference(key), [(sku, quantity)])
    assert len(deliveries) == 2  # one parcel from each fulfilment centre

    responses = [await post_delivery(harness, d) for d in deliveries]

    for response in responses:
        assert response.status_code == 200
        row = await harness.dispatched(response)
        assert (row.status, row.outcome, row.workflow_id) == ("dispatched", "signalled", key)
    recording = await harness.wait_for(key, lambda r: len(r.shipments) == 2)
    expected = [ShipmentConfirmed(shipment=shipment_from_webhook(json.loads(d["body"]))) for d in deliveries]
    assert recording.shipments == expected
    assert sum(s.shipment.lines[0].quantity for s in recording.shipments) == quantity
    assert {s.shipment.lines[0].sku for s in recording.shipments} == {sku}
    assert all(s.shipment.tracking.number for s in recording.shipments)


async def test_a_shipment_of_an_order_orderflow_did_not_place_is_acknowledged_and_ignored(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    (delivery,) = await shipped_webhooks(sandbox, http, settings, "PO-4471", [(plentiful_skus(1)[0], 1)])

    response = await post_delivery(harness, delivery)

    assert response.status_code == 200
    row = await harness.dispatched(response)
    assert row.status == "ignored" and "'PO-4471' is not an orderflow order" in (row.outcome or "")


async def test_a_tampered_body_or_a_foreign_signature_gets_401_and_signals_nothing(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    key = await harness.start_saga()
    (delivery,) = await shipped_webhooks(sandbox, http, settings, order_reference(key), [(plentiful_skus(1)[0], 1)])
    tampered = delivery["body"].replace('"quantity":1', '"quantity":9').encode()
    unsigned = {k: v for k, v in delivery["headers_sent"].items() if k != "webhook-signature"}

    answers = [
        await post_delivery(harness, delivery, raw=tampered),
        await harness.app.post("/webhooks/wms", content=delivery["body"].encode(), headers=unsigned),
    ]

    assert tampered != delivery["body"].encode()
    for response in answers:
        assert response.status_code == 401
        assert "webhook-signature" in response.json()["detail"]
    assert (await harness.recording(key)).shipments == []
