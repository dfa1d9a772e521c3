"""The service as a whole: it answers health checks, keeps an order while Temporal is away, and checks first."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.store.inbox import InboxStatus
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.inbox import INBOX_ID_HEADER, WebhookInbox
from orderflow.webhooks.relay import Relay, RelayPass

from .conftest import WebhookHarness, served, shopify_hmac, shopify_order

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def cut_off(settings: Settings, inbox_db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, WebhookInbox]]:
    """The webhook app pointed at a Temporal that is not there."""
    gateway = TemporalGateway(f"127.0.0.1:{closed_port()}", task_queue="nowhere")
    async with served(settings, gateway, inbox_db) as (http, inbox):
        yield http, inbox


def signed_order(settings: Settings, order_id: str) -> tuple[bytes, dict[str, str]]:
    """A Shopify `orders/create` body and the headers that make it authentic."""
    raw = json.dumps(shopify_order(order_id)).encode()
    return raw, {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": shopify_hmac(raw, settings.shopify.client_secret.get_secret_value()),
    }


async def test_an_authentic_order_is_stored_pending_and_answered_200_while_temporal_is_unreachable(
    cut_off: tuple[httpx.AsyncClient, WebhookInbox], settings: Settings, inbox_db: Database
) -> None:
    http, inbox = cut_off
    raw, headers = signed_order(settings, "9000000000001")

    response = await http.post("/webhooks/shopify", content=raw, headers=headers)
    relay_pass = await Relay(inbox).run_once()
    health = await http.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert relay_pass == RelayPass(dispatched=0, temporal_away=True)
    row = await store.get(inbox_db, int(response.headers[INBOX_ID_HEADER]))
    assert row is not None
    assert (row.status, row.body, row.topic, row.attempts) == (InboxStatus.PENDING, raw, "orders/create", 1)
    assert row.last_error is not None and "cannot connect to Temporal" in row.last_error
    # The signature is not kept; without an event id header the body names the event.
    assert "x-shopify-hmac-sha256" not in row.headers
    assert row.event_id.startswith("sha256:")
    # Liveness does not depend on Temporal: the service is up and says it has not reached it.
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "temporal": "not connected yet", "refused": {}}


async def test_verification_still_comes_first_while_temporal_is_unreachable(
    cut_off: tuple[httpx.AsyncClient, WebhookInbox], inbox_db: Database
) -> None:
    http, _inbox = cut_off
    response = await http.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"})
    health = await http.get("/healthz")

    assert response.status_code == 401
    assert await store.listing(inbox_db) == []
    assert health.json()["refused"] == {"shopify: bad signature": 1}


async def test_the_service_refuses_to_start_against_an_unmigrated_database(settings: Settings, tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    app = create_app(settings, temporal=TemporalGateway("127.0.0.1:9"), database=database, relay=False)
    try:
        with pytest.raises(DatabaseNotMigratedError, match="run `orderflow db upgrade`"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await database.dispose()


async def test_past_its_in_flight_limit_the_service_sheds_load_with_a_503_and_stores_nothing_it_refused(
    cut_off: tuple[httpx.AsyncClient, WebhookInbox], settings: Settings, inbox_db: Database
) -> None:
    http, inbox = cut_off
    raw, headers = signed_order(settings, "9000000000002")
    inbox.in_flight = inbox.max_in_flight  # as if that many webhooks were being stored right now

    shed = await http.post("/webhooks/shopify", content=raw, headers=headers)
    inbox.in_flight = 0
    taken = await http.post("/webhooks/shopify", content=raw, headers=headers)

    assert shed.status_code == 503 and shed.headers["Retry-After"] == "5"
    assert taken.status_code == 200
    # Only the delivery that was taken is in the inbox; the shed one was counted, for Shopify to send again.
    assert [row.deliveries for row in await store.listing(inbox_db)] == [1]
    assert (await http.get("/healthz")).json()["refused"] == {"shopify: overloaded": 1}


async def test_the_running_service_dispatches_a_stored_order_by_itself_right_after_answering(
    harness: WebhookHarness, settings: Settings, inbox_db: Database
) -> None:
    order_id = harness.new_order_id()
    raw, headers = signed_order(settings, order_id)

    async with served(settings, harness.gateway, inbox_db, relay=True) as (http, _inbox):
        response = await http.post("/webhooks/shopify", content=raw, headers=headers)
        row_id = int(response.headers[INBOX_ID_HEADER])
        for _ in range(100):
            row = await store.get(inbox_db, row_id)
            if row is not None and row.status != InboxStatus.PENDING:
                break
            await asyncio.sleep(0.05)

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert row is not None and (row.status, row.outcome) == (InboxStatus.DISPATCHED, "started")
    # No test drove a relay pass: the service's own relay, woken by the arrival, started the saga.
    assert (await harness.recording(f"order:shopify:{order_id}")).input.order.channel_order_id == order_id
