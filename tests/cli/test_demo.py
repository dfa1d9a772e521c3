"""`orderflow demo`'s core on the real dev server: Shopify orders through the webhook service into real sagas."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.channel_refund import ChannelRefundStatus, credit_memo_external_id
from orderflow.canonical.return_saga import ReturnStatus
from orderflow.canonical.saga import OrderStatus, order_reference
from orderflow.cli.demo import DemoChannel, OrderKind, OrderOutcome, run_demo
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import AmazonSettings, Settings
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.worker import build_worker

pytestmark = pytest.mark.integration


@pytest.fixture
def task_queue() -> str:
    """A fresh task queue, so no other test's worker picks up these sagas."""
    return f"demo-{uuid.uuid4()}"


@pytest.fixture
def webhook_service(dev_server: WorkflowEnvironment, settings: Settings, task_queue: str) -> Iterator[str]:
    """The webhook service over real HTTP, starting sagas on this test's queue; the sandbox delivers to it."""
    client = dev_server.client
    gateway = TemporalGateway(client.service_client.config.target_host, client.namespace, task_queue=task_queue)
    with BackgroundServer(create_app(settings, temporal=gateway)) as server:
        yield server.url


@pytest.fixture
async def subscribed(sandbox: httpx.AsyncClient, webhook_service: str) -> AsyncIterator[None]:
    """The sandbox's Shopify, WMS and carrier webhooks go to the webhook service (until the next reset)."""
    for system in ("shopify", "wms", "carrier"):
        response = await sandbox.post(
            f"/sandbox/webhooks/subscriptions/{system}",
            json={"topics": ["*"], "url": f"{webhook_service}/webhooks/{system}"},
        )
        assert response.status_code == 201, response.text
    yield


async def state(sandbox: httpx.AsyncClient, system: str) -> dict[str, Any]:
    """One simulated system's records."""
    response = await sandbox.get(f"/sandbox/state/{system}")
    response.raise_for_status()
    return dict(response.json())


async def test_four_orders_reach_their_expected_ends_then_a_return_and_an_admin_refund_balance_the_books(
    dev_server: WorkflowEnvironment,
    settings: Settings,
    http: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    subscribed: None,
    task_queue: str,
) -> None:
    async with build_worker(dev_server.client, settings, http, task_queue=task_queue):
        report = await run_demo(
            client=dev_server.client,
            shopify=ShopifyClient(http, settings.shopify),
            sandbox=sandbox,
            orders=4,
            ship_after_seconds=1.0,
            finish_within=25.0,
        )

    by_kind = {o.planned.kind: o for o in report.outcomes}
    assert set(by_kind) == {OrderKind.D2C, OrderKind.CREDIT_HOLD, OrderKind.CHANNEL_CANCEL}
    assert [(o.key, o.problem) for o in report.failures] == []
    assert by_kind[OrderKind.D2C].status is OrderStatus.COMPLETED
    assert by_kind[OrderKind.CREDIT_HOLD].status is OrderStatus.COMPLETED
    assert any("credit approved" in action for action in by_kind[OrderKind.CREDIT_HOLD].actions)
    assert by_kind[OrderKind.CHANNEL_CANCEL].status is OrderStatus.CANCELLED
    assert report.ok and report.ledger is not None and report.ledger.checked == 3

    # One prepaid order partly returned through Shopify's returns/request, the other refunded by staff
    # in admin: each ends credited in the ERP for exactly what Shopify refunded, once.
    returns = report.returns
    assert returns is not None and returns.problems == []
    (returned,) = returns.returns
    assert returned.status is ReturnStatus.COMPLETED and returned.key and returned.erp_credit_id
    assert returns.admin_refund is not None and returns.admin_refund.status is ChannelRefundStatus.CREDITED
    books = returns.reconciliation
    assert books.refunds == books.expected_refunds == {returned.order_key: 1, returns.admin_refund.order_key: 1}
    assert books.refunded == books.credited and all(amount > 0 for amount in books.refunded.values())
    netsuite = await state(sandbox, "netsuite")
    memos = {str(r["id"]): r for r in netsuite["records"].get("creditMemo", [])}
    assert returned.erp_credit_id in memos and returns.admin_refund.erp_credit_id in memos
    # The admin refund became exactly one credit memo, under its refund's external id.
    admin_key = returns.admin_refund.key
    assert admin_key is not None
    external_id = credit_memo_external_id(admin_key)
    assert [m["id"] for m in memos.values() if m.get("externalId") == external_id] == [
        returns.admin_refund.erp_credit_id
    ]

    # The sandbox agrees: one sales order for each completed order, none live for the cancelled one.
    erp_orders = (await state(sandbox, "netsuite"))["records"]["salesOrder"]
    for kind in (OrderKind.D2C, OrderKind.CREDIT_HOLD):
        key = by_kind[kind].key
        assert key is not None
        assert [o["externalId"] for o in erp_orders].count(order_reference(key)) == 1
    cancelled_key = by_kind[OrderKind.CHANNEL_CANCEL].key
    assert cancelled_key is not None
    cancelled = order_reference(cancelled_key)
    wms = await state(sandbox, "wms")
    assert [o["status"] for o in wms["orders"] if o["reference_id"] == cancelled] in ([], ["Cancelled"])
    held = [r for r in wms["reservations"] if r["reference_id"] == cancelled]
    assert held, "the cancel came after allocation, so there was a reservation to give back"
    assert all(r["status"] != "Active" for r in held)
    shopify_order = next(
        o for o in (await state(sandbox, "shopify"))["orders"] if str(o["id"]) == cancelled_key.rsplit(":", 1)[1]
    )
    assert shopify_order["cancelled_at"] is not None
    # Demo mode is switched back off afterwards.
    assert (await sandbox.get("/sandbox/demo")).json()["wms_ship_after_seconds"] is None


async def test_amazon_orders_found_by_the_poller_schedule_reach_their_ends_and_amazon_agrees(
    dev_server: WorkflowEnvironment,
    settings: Settings,
    sandbox_url: str,
    http: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    subscribed: None,
    task_queue: str,
) -> None:
    amazon = AmazonSettings(
        base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
    )
    settings = settings.model_copy(update={"amazon": amazon})
    # A schedule of this test's own: the marketplace's own id is shared by every test on the dev server.
    schedule_id = f"poll:amazon:demo-{uuid.uuid4()}"
    async with build_worker(dev_server.client, settings, http, task_queue=task_queue):
        try:
            report = await run_demo(
                client=dev_server.client,
                shopify=ShopifyClient(http, settings.shopify),
                sandbox=sandbox,
                orders=5,
                # The buyer's cancel must reach the saga through a poll before the warehouse ships:
                # seconds on a busy 2-core machine.
                ship_after_seconds=4.0,
                finish_within=40.0,
                channel=DemoChannel.AMAZON,
                task_queue=task_queue,
                amazon_schedule_id=schedule_id,
            )
        finally:
            with contextlib.suppress(RPCError):
                await dev_server.client.get_schedule_handle(schedule_id).delete()

    by_kind: dict[OrderKind, list[OrderOutcome]] = {}
    for outcome in report.outcomes:
        by_kind.setdefault(outcome.planned.kind, []).append(outcome)
    assert {kind: len(found) for kind, found in by_kind.items()} == {
        OrderKind.AMAZON: 3,
        OrderKind.AMAZON_BUYER_CANCEL: 1,
        OrderKind.AMAZON_CANCEL_BEFORE_POLL: 1,
    }
    assert [(o.key, o.status, o.problem) for o in report.failures] == []
    assert report.ok and report.amazon_problems == [] and report.amazon_polls >= 2
    # Amazon's own records: the completed orders shipped with tracking, the cancelled ones cancelled
    # by the seller's acknowledgement feed (a buyer's request is not a cancellation by itself).
    orders = {f"order:amazon:{o['orderId']}": o for o in (await state(sandbox, "amazon"))["orders"]}
    for outcome in by_kind[OrderKind.AMAZON]:
        assert outcome.key is not None
        assert orders[outcome.key]["status"] == "SHIPPED" and orders[outcome.key]["shipments"]
    for outcome in by_kind[OrderKind.AMAZON_BUYER_CANCEL] + by_kind[OrderKind.AMAZON_CANCEL_BEFORE_POLL]:
        assert outcome.key is not None
        assert orders[outcome.key]["status"] == "CANCELLED" and orders[outcome.key]["buyerCancellationRequested"]
    feeds = [f for f in (await state(sandbox, "amazon"))["feeds"] if f["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"]
    assert len(feeds) == 2
    # The Amazon orders were never meant for returns through Shopify: the return leg had nothing to do.
    assert report.returns is None
