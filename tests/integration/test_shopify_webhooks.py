"""Shopify webhooks end to end: subscribed through the Admin API, signed, retried, and finally dropped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from orderflow.adapters.shopify import (
    ShopifyClient,
    cancellation_from_webhook,
    order_from_webhook,
    refund_from_webhook,
    verify_webhook,
)
from orderflow.canonical import Money
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings

from .test_shopify_contract import create_order, refund_for, shipment

pytestmark = pytest.mark.integration


@dataclass
class Received:
    """One delivery attempt as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """A merchant's webhook endpoint: `/ok` accepts, `/flaky` fails each event once, `/down` always fails."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.app = FastAPI()

        @self.app.post("/{mode}")
        async def hook(mode: str, request: Request) -> Response:
            body = await request.body()
            event = request.headers.get("x-shopify-event-id", "")
            seen_before = any(r.headers.get("x-shopify-event-id") == event for r in self.received)
            status = 500 if mode == "down" or (mode == "flaky" and not seen_before) else 200
            self.received.append(Received(f"/{mode}", dict(request.headers), body, status))
            return Response(status_code=status)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with BackgroundServer(receiver.app) as server:
        yield receiver, server.url


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, str]) -> tuple[Receiver, str]:
    receiver_server[0].received.clear()
    return receiver_server


@pytest.fixture
def shopify(settings: Settings, http: httpx.AsyncClient) -> ShopifyClient:
    return ShopifyClient(http, settings.shopify)


async def wait_for(condition: Any, within: float = 5.0) -> None:
    """Poll until the sandbox's engine has done what the test waits for."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for webhook deliveries")
        await asyncio.sleep(0.05)


async def test_orders_create_is_signed_and_its_retry_keeps_the_event_id(
    shopify: ShopifyClient, settings: Settings, receiver: tuple[Receiver, str], sandbox: httpx.AsyncClient
) -> None:
    hooks, url = receiver
    sub_id = await shopify.ensure_webhook_subscription("orders/create", f"{url}/flaky")
    assert await shopify.ensure_webhook_subscription("orders/create", f"{url}/flaky") == sub_id

    order_id = await create_order(shopify, [("BOLT-M8-S", 2)])
    await wait_for(lambda: len(hooks.at("/flaky")) >= 2)

    first, retry = hooks.at("/flaky")[:2]
    secret = settings.shopify.client_secret.get_secret_value()
    assert (first.answered, retry.answered) == (500, 200)
    assert first.body == retry.body
    assert first.headers["x-shopify-event-id"] == retry.headers["x-shopify-event-id"]
    assert first.headers["x-shopify-webhook-id"] == retry.headers["x-shopify-webhook-id"]
    for attempt in (first, retry):
        assert verify_webhook(attempt.body, attempt.headers["x-shopify-hmac-sha256"], [secret])
        assert attempt.headers["x-shopify-topic"] == "orders/create"
        assert attempt.headers["x-shopify-shop-domain"] == "orderflow-sandbox.myshopify.com"
        assert attempt.headers["x-shopify-api-version"] == "2025-10"
        assert attempt.headers["x-shopify-triggered-at"]
    assert not verify_webhook(first.body + b" ", first.headers["x-shopify-hmac-sha256"], [secret])
    order = order_from_webhook(json.loads(retry.body))
    assert order.channel_order_id == order_id
    assert [(line.sku, line.quantity) for line in order.lines] == [("BOLT-M8-S", 2)]
    assert order == (await shopify.get_order(order_id)).model_copy(update={"location_id": None})
    (delivery,) = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "shopify"})).json()
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert delivery["status"] == "delivered"


async def test_a_subscription_is_deleted_after_eight_failed_retries(
    shopify: ShopifyClient, receiver: tuple[Receiver, str], sandbox: httpx.AsyncClient
) -> None:
    hooks, url = receiver
    sub_id = await shopify.ensure_webhook_subscription("orders/create", f"{url}/down")

    await create_order(shopify, [("BOLT-M8-S", 1)])
    # The 4-hour schedule is compressed; moving the clock on makes each retry due at once.
    for _ in range(30):
        await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
        await sandbox.post("/sandbox/tick")
        (delivery,) = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "shopify"})).json()
        if delivery["status"] != "pending":
            break

    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == 9  # the first try and 8 retries
    assert len({r.headers["x-shopify-event-id"] for r in hooks.at("/down")}) == 1
    assert sub_id not in [s["id"] for s in await shopify.list_webhook_subscriptions()]
    subs = (await sandbox.get("/sandbox/webhooks/subscriptions", params={"system": "shopify"})).json()
    assert [s["deleted"] for s in subs if s["id"] == sub_id] == [True]


async def test_fulfillment_refund_and_cancel_webhooks_map_to_canonical(
    shopify: ShopifyClient, receiver: tuple[Receiver, str]
) -> None:
    hooks, url = receiver
    for topic in ("fulfillments/create", "refunds/create", "orders/cancelled"):
        await shopify.ensure_webhook_subscription(topic, f"{url}/ok")
    shipped = await create_order(shopify, [("BOLT-M8-S", 2)])
    line = (await shopify.get_order(shipped)).lines[0]
    cancelled = await create_order(shopify, [("NUT-M8-M", 1)])

    await shopify.create_fulfillment(shipped, shipment("1Z9999", [("BOLT-M8-S", 2)]))
    await shopify.refund(shipped, refund_for(shipped, line.line_id, line.sku, "4.00"), idempotency_key="hook-ret")
    await shopify.cancel_order(cancelled, reason="customer", restock=True)
    await wait_for(lambda: len(hooks.at("/ok")) >= 3)

    bodies = {r.headers["x-shopify-topic"]: json.loads(r.body) for r in hooks.at("/ok")}
    assert bodies["fulfillments/create"]["tracking_number"] == "1Z9999"
    assert bodies["fulfillments/create"]["order_id"] == int(shipped)
    refund = refund_from_webhook(bodies["refunds/create"])
    assert refund.order_key == f"order:shopify:{shipped}"
    assert refund.total == Money.of("4.00", "USD")
    assert [(ln.sku, ln.quantity, ln.restock) for ln in refund.lines] == [("BOLT-M8-S", 1, True)]
    cancellation = cancellation_from_webhook(bodies["orders/cancelled"])
    assert cancellation.channel_order_id == cancelled and cancellation.reason == "customer"


async def test_a_deleted_subscription_receives_nothing(shopify: ShopifyClient, receiver: tuple[Receiver, str]) -> None:
    hooks, url = receiver
    sub_id = await shopify.ensure_webhook_subscription("orders/create", f"{url}/ok")

    assert await shopify.delete_webhook_subscription(sub_id)
    assert not await shopify.delete_webhook_subscription(sub_id)
    await create_order(shopify, [("BOLT-M8-S", 1)])
    await asyncio.sleep(0.3)

    assert await shopify.list_webhook_subscriptions() == []
    assert hooks.at("/ok") == []


async def test_demo_mode_places_orders_that_map_cleanly(
    shopify: ShopifyClient, receiver: tuple[Receiver, str], sandbox: httpx.AsyncClient
) -> None:
    hooks, url = receiver
    await shopify.ensure_webhook_subscription("orders/create", f"{url}/ok")
    seeded = len((await sandbox.get("/sandbox/state/shopify")).json()["orders"])
    await sandbox.put("/sandbox/demo", json={"shopify_orders_per_minute": 60})
    try:
        await sandbox.post("/sandbox/tick")
        await sandbox.post("/sandbox/clock/advance", json={"seconds": 6})
        await sandbox.post("/sandbox/tick")
    finally:
        await sandbox.put("/sandbox/demo", json={"shopify_orders_per_minute": 0})
    orders = (await sandbox.get("/sandbox/state/shopify")).json()["orders"]
    await wait_for(lambda: len(hooks.at("/ok")) >= len(orders) - seeded)

    created = [order_from_webhook(json.loads(r.body)) for r in hooks.at("/ok")]
    assert len(orders) - seeded >= 6
    assert {o.channel_order_id for o in created} == {str(o["id"]) for o in orders[seeded:]}
    assert {o["financial_status"] for o in orders} == {"paid", "pending"}  # D2C and B2B both appear
