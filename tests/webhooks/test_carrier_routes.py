"""Carrier webhooks into the service: a tracker's outcome finds its saga through `TrackingNumbers`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from orderflow.adapters.carrier import CarrierClient
from orderflow.canonical import Shipment, ShipmentLine, Tracking
from orderflow.canonical.saga import SIGNAL_SHIPMENT_CONFIRMED, DeliveryRecorded, ShipmentConfirmed
from orderflow.sandbox.carrier import signature_header
from orderflow.settings import Settings

from .conftest import NOWHERE, WebhookHarness, delivered

pytestmark = pytest.mark.integration

DELIVERED_CODE = "EZ4000000004"  # the EasyPost test code whose tracker ends delivered


async def tracker_events(
    sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> list[dict[str, Any]]:
    """Create a tracker for the delivered test code, let it reach delivered, return its signed Events."""
    topics = ["tracker.created", "tracker.updated"]
    await sandbox.post("/sandbox/webhooks/subscriptions/carrier", json={"topics": topics, "url": NOWHERE})
    await CarrierClient(http, settings.carrier).create_tracker(DELIVERED_CODE, "USPS")
    # Four scans a minute apart: pre_transit, in_transit, out_for_delivery, delivered.
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 300})
    return await delivered(sandbox, "carrier", lambda d: True, count=4)


def status_of(delivery: dict[str, Any]) -> str:
    return str(json.loads(delivery["body"])["result"]["status"])


async def ship_with_tracking(harness: WebhookHarness, key: str, number: str) -> None:
    """Tell the saga a parcel left with this tracking number, and wait until visibility can find it by it."""
    shipment = Shipment(
        shipment_id=f"shp-{key}",
        tracking=Tracking(carrier="USPS", number=number),
        lines=[ShipmentLine(sku="BOLT-M8-S", quantity=2)],
        shipped_at=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    )
    await harness.temporal.get_workflow_handle(key).signal(
        SIGNAL_SHIPMENT_CONFIRMED, ShipmentConfirmed(shipment=shipment)
    )
    for _ in range(100):
        if key in await harness.gateway.sagas_tracking(number):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never became findable by TrackingNumbers = {number}")


async def post_event(harness: WebhookHarness, raw: bytes, signature: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-Hmac-Signature": signature}
    return await harness.app.post("/webhooks/carrier", content=raw, headers=headers)


async def test_a_delivered_tracker_is_recorded_on_the_saga_shipping_its_number(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    key = await harness.start_saga()
    await ship_with_tracking(harness, key, DELIVERED_CODE)
    events = await tracker_events(sandbox, http, settings)
    (delivered_event,) = [d for d in events if status_of(d) == "delivered"]
    (created_event,) = [d for d in events if json.loads(d["body"])["description"] == "tracker.created"]

    on_the_way = await post_event(
        harness, created_event["body"].encode(), created_event["headers_sent"]["X-Hmac-Signature"]
    )
    arrived = await post_event(
        harness, delivered_event["body"].encode(), delivered_event["headers_sent"]["X-Hmac-Signature"]
    )

    assert on_the_way.status_code == 200
    assert on_the_way.json()["status"] == "ignored"
    assert "pre_transit, not a delivery outcome" in on_the_way.json()["reason"]
    assert arrived.status_code == 200
    row = await harness.dispatched(arrived)
    assert row.outcome == "signalled" and key in (row.workflow_id or "").split(",")
    recording = await harness.wait_for(key, lambda r: bool(r.deliveries))
    assert recording.deliveries == [DeliveryRecorded(tracking_number=DELIVERED_CODE, status="delivered")]


async def test_an_outcome_for_a_number_no_saga_ships_is_acknowledged_and_ignored(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    (real,) = [d for d in await tracker_events(sandbox, http, settings) if status_of(d) == "delivered"]
    event = json.loads(real["body"])
    event["result"]["tracking_code"] = "9400111202555842761023"
    raw = json.dumps(event).encode()

    response = await post_event(harness, raw, signature_header(settings.carrier.webhook_secret.get_secret_value(), raw))

    assert response.status_code == 200
    row = await harness.dispatched(response)
    assert (row.status, row.outcome) == (
        "ignored",
        "ignored: no running saga ships tracking number 9400111202555842761023",
    )


async def test_a_bad_signature_gets_401_and_a_number_that_could_break_the_query_gets_422(
    harness: WebhookHarness, sandbox: httpx.AsyncClient, http: httpx.AsyncClient, settings: Settings
) -> None:
    (real,) = [d for d in await tracker_events(sandbox, http, settings) if status_of(d) == "delivered"]
    event = json.loads(real["body"])
    event["result"]["tracking_code"] = "EZ' OR TrackingNumbers != '"
    raw = json.dumps(event).encode()
    secret = settings.carrier.webhook_secret.get_secret_value()

    forged = await post_event(harness, real["body"].encode(), signature_header("not-our-secret", real["body"].encode()))
    hostile = await post_event(harness, raw, signature_header(secret, raw))

    assert forged.status_code == 401
    assert "X-Hmac-Signature" in forged.json()["detail"]
    assert hostile.status_code == 422
    assert "visibility query" in hostile.json()["detail"]
