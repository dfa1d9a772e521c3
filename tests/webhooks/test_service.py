"""The service as a whole: it answers health checks, keeps an order while Temporal is away, and checks first."""

from __future__ import annotations

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
from orderflow.webhooks.inbox import INBOX_ID_HEADER

from .conftest import served, shopify_hmac, shopify_order

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def cut_off(settings: Settings, inbox_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The webhook app pointed at a Temporal that is not there."""
    gateway = TemporalGateway(f"127.0.0.1:{closed_port()}", task_queue="nowhere")
    async with served(settings, gateway, inbox_db) as (http, _inbox):
        yield http


async def test_an_authentic_order_is_stored_pending_and_answered_200_while_temporal_is_unreachable(
    cut_off: httpx.AsyncClient, settings: Settings, inbox_db: Database
) -> None:
    raw = json.dumps(shopify_order("9000000000001")).encode()
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": shopify_hmac(raw, settings.shopify.client_secret.get_secret_value()),
    }

    response = await cut_off.post("/webhooks/shopify", content=raw, headers=headers)
    health = await cut_off.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    row = await store.get(inbox_db, int(response.headers[INBOX_ID_HEADER]))
    assert row is not None
    assert (row.status, row.body, row.topic) == (InboxStatus.PENDING, raw, "orders/create")
    assert row.last_error is not None and "cannot connect to Temporal" in row.last_error
    # The signature is not kept; without an event id header the body names the event.
    assert "x-shopify-hmac-sha256" not in row.headers
    assert row.event_id.startswith("sha256:")
    # Liveness does not depend on Temporal: the service is up and says it has not reached it.
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "temporal": "not connected yet", "refused": {}}


async def test_verification_still_comes_first_while_temporal_is_unreachable(
    cut_off: httpx.AsyncClient, inbox_db: Database
) -> None:
    response = await cut_off.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"})
    health = await cut_off.get("/healthz")

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
