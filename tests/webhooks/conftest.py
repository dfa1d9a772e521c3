"""The webhook service under test: its app over ASGI with a migrated inbox, the real dev server, a stand-in saga."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# The store tests' fixture: a migrated database on SQLite and on PostgreSQL, for the inbox's own tests.
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.canonical import Channel, order_key
from orderflow.settings import Settings
from orderflow.store import inbox as inbox_store
from orderflow.store.db import Database, upgrade
from orderflow.store.inbox import InboxEvent
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.inbox import INBOX_ID_HEADER, WebhookInbox
from orderflow.webhooks.relay import Relay

from .saga_stand_in import QUERY_RECORDING, OrderToCashStandIn, Recording, ReturnToRefundStandIn

SHOP_DOMAIN = "orderflow-sandbox.myshopify.com"
# Port 9 (discard) refuses connections on loopback: where the sandbox "delivers" webhooks the
# tests then read back from its delivery log and post to the app themselves.
NOWHERE = "http://127.0.0.1:9/hooks"


def shopify_hmac(raw: bytes, secret: str) -> str:
    """Shopify's signature: base64 HMAC-SHA256 of the raw body with the app's client secret."""
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def shopify_order(
    order_id: str, lines: list[tuple[str, int]] | None = None, *, cancelled: bool = False
) -> dict[str, Any]:
    """A REST-shaped `orders/create` (or, cancelled, `orders/cancelled`) body, as Shopify sends it."""
    lines = lines if lines is not None else [("BOLT-M8-S", 2), ("NUT-M8", 4)]
    line_items = [
        {
            "id": 15518907892000 + i,
            "sku": sku,
            "name": f"Part {sku}",
            "quantity": qty,
            "price": "12.50",
            "requires_shipping": True,
            "tax_lines": [],
            "discount_allocations": [],
        }
        for i, (sku, qty) in enumerate(lines)
    ]
    total = sum(qty for _, qty in lines) * 12.5 + 9.95
    address = {
        "first_name": "Grace",
        "last_name": "Hopper",
        "address1": "1 Main St",
        "city": "Austin",
        "province_code": "TX",
        "zip": "78701",
        "country_code": "US",
    }
    return {
        "id": int(order_id),
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{order_id[-4:]}",
        "email": "grace@example.com",
        "created_at": "2026-03-01T10:15:00-05:00",
        "currency": "USD",
        "total_price": f"{total:.2f}",
        "financial_status": "paid",
        "cancelled_at": "2026-03-01T11:00:00-05:00" if cancelled else None,
        "cancel_reason": "customer" if cancelled else None,
        "line_items": line_items,
        "shipping_lines": [{"title": "Standard", "code": "standard", "price": "9.95", "tax_lines": []}],
        "shipping_address": address,
        "billing_address": address,
        "customer": {"id": 207119552, "first_name": "Grace", "last_name": "Hopper", "email": "grace@example.com"},
    }


@dataclass
class WebhookHarness:
    """The app as a vendor reaches it, the Temporal it dispatches to, and the sagas a test made."""

    app: httpx.AsyncClient
    temporal: Client
    gateway: TemporalGateway
    task_queue: str
    settings: Settings
    inbox: WebhookInbox
    keys: list[str] = field(default_factory=list)

    def new_order_id(self) -> str:
        """A Shopify order id no other test in the session uses, so saga ids never collide."""
        order_id = str(9_000_000_000_000 + uuid.uuid4().int % 1_000_000_000_000)
        self.keys.append(order_key(Channel.SHOPIFY, order_id))
        return order_id

    async def post_shopify(
        self, topic: str, raw: bytes, *, secret: str | None = None, via: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        """Deliver a Shopify webhook (to this app, or `via` another), signed with the configured secret by default."""
        key = secret if secret is not None else self.settings.shopify.client_secret.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": shopify_hmac(raw, key),
            "X-Shopify-Shop-Domain": SHOP_DOMAIN,
            "X-Shopify-Event-Id": str(uuid.uuid4()),
        }
        return await (via or self.app).post("/webhooks/shopify", content=raw, headers=headers)

    async def start_saga(self) -> str:
        """A saga started the way production starts one: a signed `orders/create`; returns its key."""
        order_id = self.new_order_id()
        response = await self.post_shopify("orders/create", json.dumps(shopify_order(order_id)).encode())
        assert response.status_code == 200, response.text
        row = await self.dispatched(response)
        assert row.outcome == "started", row.outcome
        return self.keys[-1]

    async def relay(self) -> None:
        """Dispatch everything pending, as the service's relay does right after each answer."""
        relay = Relay(self.inbox)
        while (await relay.run_once()).dispatched:
            pass

    async def dispatched(self, response: httpx.Response) -> InboxEvent:
        """The inbox row a webhook's answer names, after the relay dispatched what was pending."""
        await self.relay()
        row = await inbox_store.get(self.inbox.database, int(response.headers[INBOX_ID_HEADER]))
        assert row is not None, response.headers
        return row

    async def recording(self, key: str) -> Recording:
        """What the stand-in saga under this key has received so far."""
        result: Recording = await self.temporal.get_workflow_handle(key).query(QUERY_RECORDING, result_type=Recording)
        return result

    async def wait_for(self, key: str, done: Callable[[Recording], bool], within: float = 5.0) -> Recording:
        """The stand-in's recording once `done` holds (signals are applied asynchronously)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            recording = await self.recording(key)
            if done(recording):
                return recording
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{key} never reached the expected state: {recording}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def served(
    settings: Settings, gateway: TemporalGateway, database: Database, *, relay: bool = False
) -> AsyncIterator[tuple[httpx.AsyncClient, WebhookInbox]]:
    """The webhook app over ASGI, started as uvicorn starts it (lifespan); the relay left to the test unless asked."""
    app = create_app(settings, temporal=gateway, database=database, relay=relay)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhooks") as http,
    ):
        yield http, app.state.inbox


@pytest.fixture
async def inbox_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite inbox of this test's own (the store tests cover PostgreSQL too)."""
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def harness(
    dev_server: WorkflowEnvironment, settings: Settings, inbox_db: Database
) -> AsyncIterator[WebhookHarness]:
    """The webhook app connected (lazily, as in production) to the dev server, a stand-in saga on its own queue."""
    client = dev_server.client
    task_queue = f"webhooks-{uuid.uuid4()}"
    gateway = TemporalGateway(client.service_client.config.target_host, client.namespace, task_queue=task_queue)
    async with (
        Worker(client, task_queue=task_queue, workflows=[OrderToCashStandIn, ReturnToRefundStandIn]),
        served(settings, gateway, inbox_db) as (http, inbox),
    ):
        state = WebhookHarness(
            app=http, temporal=client, gateway=gateway, task_queue=task_queue, settings=settings, inbox=inbox
        )
        yield state
    for key in state.keys:
        # Leave no stand-in running for a later test's visibility queries to find.
        # A key may have no saga: some tests assert exactly that.
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(key).terminate("webhook test finished")


async def delivered(
    sandbox: httpx.AsyncClient, system: str, wanted: Callable[[dict[str, Any]], bool], count: int = 1
) -> list[dict[str, Any]]:
    """Deliveries the sandbox attempted (signed, headers recorded) that match `wanted`, oldest first."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        await sandbox.post("/sandbox/tick")
        rows = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": system})).json()
        found = [d for d in rows if d["headers_sent"] and wanted(d)]
        if len(found) >= count:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the sandbox never sent {count} matching {system} webhooks: {rows}")
        await asyncio.sleep(0.02)
