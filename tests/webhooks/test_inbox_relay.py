"""Temporal down: every signed order is answered 200 and kept; once Temporal is back the relay starts each saga once.

The dev server here is this module's own, not the session's. A restarted dev server would forget
every saga, so "down" is the gateway pointed at a closed port, and "back" is pointing it at the
running server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from orderflow.adapters import shopify as shopify_adapter
from orderflow.cli import app as cli
from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxStatus
from orderflow.webhooks import shopify
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.webhooks.inbox import INBOX_ID_HEADER
from orderflow.webhooks.relay import Relay

from .conftest import SHOP_DOMAIN, served, shopify_hmac, shopify_order
from .saga_stand_in import OrderToCashStandIn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def own_server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own, so its outages and sagas touch no other test."""
    from support.temporal import start_dev_server

    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def signed(settings: Settings, order_id: str, *, event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(shopify_order(order_id)).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": shopify_hmac(raw, settings.shopify.client_secret.get_secret_value()),
        "X-Shopify-Shop-Domain": SHOP_DOMAIN,
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
    }


async def starts(env: WorkflowEnvironment, key: str) -> int:
    handle = env.client.get_workflow_handle(key)
    kinds = [e.event_type async for e in handle.fetch_history_events()]
    return kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)


async def test_orders_received_while_temporal_is_down_each_start_one_saga_once_it_is_back(
    own_server: WorkflowEnvironment, settings: Settings, database: Database
) -> None:
    client = own_server.client
    queue = f"inbox-{uuid.uuid4()}"
    gateway = TemporalGateway(f"127.0.0.1:{closed_port()}", client.namespace, task_queue=queue)
    order_ids = [str(9_100_000_000_000 + uuid.uuid4().int % 10**12) for _ in range(200)]

    async with served(settings, gateway, database) as (http, inbox):
        responses = []
        for order_id in order_ids:
            raw, headers = signed(settings, order_id)
            responses.append(await http.post("/webhooks/shopify", content=raw, headers=headers))
        assert [r.status_code for r in responses] == [200] * 200
        assert {r.json()["status"] for r in responses} == {"accepted"}
        relay = Relay(inbox, grace=timedelta(0), batch=500)
        still_down = await relay.run_once()

        # Temporal comes back.
        inbox.temporal = TemporalGateway(client.service_client.config.target_host, client.namespace, task_queue=queue)
        async with Worker(client, task_queue=queue, workflows=[OrderToCashStandIn]):
            back = await relay.run_once()
            again = await relay.run_once()
            keys = [f"order:shopify:{order_id}" for order_id in order_ids]
            counts = await asyncio.gather(*(starts(own_server, key) for key in keys))
            for key in keys:
                await client.get_workflow_handle(key).terminate("inbox test finished")

    assert still_down.temporal_away and still_down.dispatched == 0
    assert (back.dispatched, back.temporal_away) == (200, False)
    assert again.dispatched == 0
    assert counts == [1] * 200
    rows = sorted(await store.listing(database, limit=500), key=lambda r: r.id)
    assert [r.status for r in rows] == [InboxStatus.DISPATCHED] * 200
    assert [r.workflow_id for r in rows] == keys
    assert {r.outcome for r in rows} == {"started"}
    # The first row was tried while Temporal was down, and again once it was back; the relay
    # stopped at it the first time, so every other row was tried once.
    assert [r.attempts for r in rows] == [2] + [1] * 199


async def test_a_rejected_order_is_replayed_from_the_cli_once_its_mapping_is_fixed(
    own_server: WorkflowEnvironment,
    settings: Settings,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = own_server.client
    target = client.service_client.config.target_host
    order_id = str(9_200_000_000_000 + uuid.uuid4().int % 10**12)
    raw, headers = signed(settings, order_id)
    real_mapping = shopify_adapter.order_from_webhook

    def broken_mapping(payload: dict[str, object]) -> object:
        raise ValueError("the mapping does not know this order's shape yet")

    monkeypatch.setattr(shopify, "order_from_webhook", broken_mapping)
    async with served(settings, TemporalGateway(target, client.namespace, task_queue="unused"), database) as (http, _):
        refused = await http.post("/webhooks/shopify", content=raw, headers=headers)
        redelivered = await http.post("/webhooks/shopify", content=raw, headers=headers)
    inbox_id = int(refused.headers[INBOX_ID_HEADER])

    monkeypatch.setattr(shopify, "order_from_webhook", real_mapping)
    monkeypatch.setenv("TEMPORAL_ADDRESS", target)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", client.namespace)
    url = ["--url", database.url]
    runner = CliRunner()
    # The CLI names a database by URL only; this test's PostgreSQL schema is reached through the fixture's.
    monkeypatch.setattr("orderflow.cli.inbox._database", lambda _s, _u: Database(database.url, schema=database.schema))
    listed = await asyncio.to_thread(runner.invoke, cli, ["inbox", "list", "--status", "rejected", *url])
    shown = await asyncio.to_thread(runner.invoke, cli, ["inbox", "show", str(inbox_id), *url])
    replayed = await asyncio.to_thread(runner.invoke, cli, ["inbox", "replay", str(inbox_id), *url])
    replayed_again = await asyncio.to_thread(runner.invoke, cli, ["inbox", "replay", str(inbox_id), *url])
    key = f"order:shopify:{order_id}"
    described = await client.get_workflow_handle(key).describe()
    await client.get_workflow_handle(key).terminate("inbox test finished")

    assert refused.status_code == 422
    assert "does not know this order's shape" in refused.json()["detail"]["reason"]
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "duplicate"
    assert listed.exit_code == 0, listed.output
    assert "rejected" in listed.output and "orders/create" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "does not know this order's shape" in shown.output and "x-shopify-event-id" in shown.output
    assert "x-shopify-hmac-sha256" not in shown.output
    assert replayed.exit_code == 0, replayed.output
    assert "dispatched" in replayed.output
    assert described.id == key
    assert replayed_again.exit_code == 1 and "--force" in replayed_again.output
    row = await store.get(database, inbox_id)
    assert row is not None
    assert (row.status, row.workflow_id, row.outcome, row.deliveries) == (InboxStatus.DISPATCHED, key, "started", 2)


def test_replay_exits_2_when_the_database_is_unreachable() -> None:
    result = CliRunner().invoke(cli, ["inbox", "replay", "1", "--url", "postgresql://nobody@127.0.0.1:9/none"])

    assert result.exit_code == 2
    assert "cannot read the inbox" in result.output
