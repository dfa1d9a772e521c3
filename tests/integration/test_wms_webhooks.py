"""ShipBob webhooks from the sandbox to a real receiver: signed, retried with a stable id, mapped to shipments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, scarce_sku, split_only_sku, vendor_client
from fastapi import FastAPI, Request, Response

from orderflow.adapters.wms import WmsClient, shipment_from_webhook, verify_webhook
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook endpoint that fails its first `failures` deliveries and records every attempt."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/hooks/wms")
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=500 if len(self.received) <= self.failures else 200)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A receiver that fails once, served over real HTTP."""
    hook = Receiver(failures=1)
    with BackgroundServer(hook.app) as server:
        yield hook, f"{server.url}/hooks/wms"


async def wait_for(predicate: Any, sandbox: httpx.AsyncClient, *, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the webhook never arrived")
        await sandbox.post("/sandbox/tick")
        await asyncio.sleep(0.02)


async def test_order_shipped_is_signed_and_keeps_its_id_across_a_retry(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    wms = WmsClient(http, settings.wms)
    secret = await wms.subscribe_webhooks(url, ["order.shipped"])
    first, second = plentiful_skus(2)
    order = await wms.create_order(fulfillment_request("order:shopify:5001", [(first, 2), (second, 1)]))
    async with vendor_client(settings) as vendor:
        await vendor.post(
            "/simulate/shipment", json={"order_id": order.wms_order_id, "simulation": {"action": "ShipOrder"}}
        )

    await wait_for(lambda: len(hook.received) >= 2, sandbox)

    (failed_headers, failed_body), (headers, body) = hook.received[:2]
    assert headers["x-webhook-topic"] == "order.shipped"
    assert headers["webhook-id"] == failed_headers["webhook-id"]
    assert headers["webhook-id"].startswith("msg_")
    assert body == failed_body
    assert verify_webhook(body, headers, secret, now=time.time())
    assert verify_webhook(failed_body, failed_headers, secret, now=time.time())
    assert not verify_webhook(body, headers, "whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", now=time.time())
    shipment = shipment_from_webhook(json.loads(body))
    assert [shipment] == await wms.list_shipments(order.wms_order_id)
    assert {(line.sku, line.quantity) for line in shipment.lines} == {(first, 2), (second, 1)}


async def test_a_split_order_ships_one_signed_event_per_parcel(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    hook = Receiver()
    sku, qty = split_only_sku()
    with BackgroundServer(hook.app) as server:
        wms = WmsClient(http, settings.wms)
        secret = await wms.subscribe_webhooks(f"{server.url}/hooks/wms", ["order.shipped"])
        order = await wms.create_order(fulfillment_request("order:shopify:5002", [(sku, qty)]))
        async with vendor_client(settings) as vendor:
            body = {"order_id": order.wms_order_id, "simulation": {"action": "ShipOrder"}}
            await vendor.post("/simulate/shipment", json=body)
        await wait_for(lambda: len(hook.received) >= 2, sandbox)

    shipments = [shipment_from_webhook(json.loads(raw)) for _, raw in hook.received]
    assert all(verify_webhook(raw, headers, secret, now=time.time()) for headers, raw in hook.received)
    assert len({headers["webhook-id"] for headers, _ in hook.received}) == 2
    assert sorted(s.warehouse_id or "" for s in shipments) == ["11", "8"]
    assert sum(s.lines[0].quantity for s in shipments) == qty


async def test_subscriptions_are_listed_and_deleted_through_the_vendor_api(settings: Settings) -> None:
    async with vendor_client(settings) as vendor:
        created = await vendor.post("/webhook", json={"topics": ["order.shipped"], "url": "https://example.com/h"})
        listed = (await vendor.get("/webhook")).json()["items"]
        deleted = await vendor.delete(f"/webhook/{created.json()['id']}")
        after = (await vendor.get("/webhook")).json()["items"]
        bad = await vendor.post("/webhook", json={"topics": ["order.teleported"], "url": "https://example.com/h"})

    assert created.status_code == 200 and created.json()["secret"].startswith("whsec_")
    assert [s["id"] for s in listed] == [created.json()["id"]]
    assert deleted.status_code == 204
    assert after == []
    assert bad.status_code == 422 and "topics" in bad.json()["errors"]


async def test_duplicates_injected_by_the_outbox_carry_the_same_webhook_id(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    hook = Receiver()
    with BackgroundServer(hook.app) as server:
        wms = WmsClient(http, settings.wms)
        await wms.subscribe_webhooks(f"{server.url}/hooks/wms", ["order.shipment.exception"])
        await sandbox.put("/sandbox/webhooks/chaos/wms", json={"duplicate_rate": 1.0})
        await wms.create_order(fulfillment_request("order:shopify:5003", [(scarce_sku(), 50)]))
        await wait_for(lambda: len(hook.received) >= 2, sandbox)

    ids = [headers["webhook-id"] for headers, _ in hook.received]
    assert len(ids) == 2 and ids[0] == ids[1]


async def test_a_subscription_that_never_answers_is_disabled_after_the_last_retry(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    wms = WmsClient(http, settings.wms)
    await wms.subscribe_webhooks("http://127.0.0.1:9/dead", ["order.shipment.exception"])
    await wms.create_order(fulfillment_request("order:shopify:5004", [(scarce_sku(), 50)]))

    for _ in range(10):  # the first attempt and seven retries, with the clock moved past each wait
        await sandbox.post("/sandbox/clock/advance", json={"seconds": 36000})
        await sandbox.post("/sandbox/tick")

    (delivery,) = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json()
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 8
    async with vendor_client(settings) as vendor:
        (subscription,) = (await vendor.get("/webhook")).json()["items"]
    assert subscription["enabled"] is False
