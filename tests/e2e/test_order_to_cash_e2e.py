"""Order to cash end to end: a signed Shopify webhook to COMPLETED on the real dev server and worker.

Everything is real except the vendors: the Temporal dev server, the worker with the real
activities and adapters, the webhook service over HTTP, and the sandbox delivering signed webhooks
(Shopify `orders/create`, the WMS's `order.shipped`). The assertions read the sandbox's state:
what the ERP, the warehouse, the carrier and the store hold at the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from integration.test_shopify_contract import ORDER_CREATE, order_input
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import OrderStatus, OrderToCashResult, order_reference
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.worker import build_worker
from orderflow.workflows.order_to_cash import OrderToCash

pytestmark = pytest.mark.integration

D2C_LINES = [("BOLT-M8-S", 2), ("NUT-M8-M", 1)]


@dataclass
class Stack:
    """The running system for one test: sandbox, webhook service, worker, and a Shopify client."""

    client: Client
    sandbox: httpx.AsyncClient
    shopify: ShopifyClient

    async def place_order(self, lines: list[tuple[str, int]] = D2C_LINES) -> str:
        """Create an order in the sandbox store; the store sends `orders/create` to the webhook service."""
        created = (await self.shopify.execute(ORDER_CREATE, {"order": order_input(lines)}))["orderCreate"]
        assert created["userErrors"] == [], created["userErrors"]
        return f"order:shopify:{created['order']['legacyResourceId']}"

    async def saga(self, key: str, timeout: float = 20) -> WorkflowHandle[OrderToCash, OrderToCashResult]:
        """The saga the webhook started, once it exists."""
        handle: WorkflowHandle[OrderToCash, OrderToCashResult] = self.client.get_workflow_handle(
            key, result_type=OrderToCashResult
        )
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                await handle.describe()
                return handle
            except RPCError:
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"no saga {key} was started") from None
                await asyncio.sleep(0.1)

    async def finish(self, key: str, timeout: float = 60) -> OrderToCashResult:
        """Wait for the saga's end."""
        handle = await self.saga(key)
        return await asyncio.wait_for(handle.result(), timeout)

    async def state(self, system: str) -> dict[str, Any]:
        response = await self.sandbox.get(f"/sandbox/state/{system}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def fault(self, **rule: Any) -> None:
        (await self.sandbox.post("/sandbox/faults", json=rule)).raise_for_status()


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment, sandbox: httpx.AsyncClient, settings: Settings, http: httpx.AsyncClient
) -> AsyncIterator[Stack]:
    queue = f"e2e-{uuid.uuid4()}"
    target = dev_server.client.service_client.config.target_host
    # Lost responses must surface as timeouts quickly, so the retries happen within the test.
    settings = settings.model_copy(
        update={
            "netsuite": settings.netsuite.model_copy(update={"timeout_seconds": 0.5}),
            "carrier": settings.carrier.model_copy(update={"timeout_seconds": 0.5}),
            "wms": settings.wms.model_copy(update={"timeout_seconds": 0.5}),
        }
    )
    service = create_app(settings, temporal=TemporalGateway(target, task_queue=queue))
    with BackgroundServer(service) as hooks:
        subscriptions = {
            "shopify": ["orders/create", "orders/cancelled"],
            "wms": ["order.shipped"],
            "carrier": ["tracker.updated"],
        }
        for system, topics in subscriptions.items():
            response = await sandbox.post(
                f"/sandbox/webhooks/subscriptions/{system}",
                json={"topics": topics, "url": f"{hooks.url}/webhooks/{system}"},
            )
            response.raise_for_status()
        (await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 0.3})).raise_for_status()
        async with build_worker(dev_server.client, settings, http, task_queue=queue):
            yield Stack(client=dev_server.client, sandbox=sandbox, shopify=ShopifyClient(http, settings.shopify))


def records(netsuite: dict[str, Any], record_type: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = netsuite["records"].get(record_type, [])
    return found if isinstance(found, list) else list(found.values())


async def assert_one_of_everything(stack: Stack, key: str) -> None:
    """Exactly one sales order, invoice, label, WMS order and store fulfillment for the order; nothing held."""
    reference = order_reference(key)
    channel_order_id = int(key.rsplit(":", 1)[1])

    netsuite = await stack.state("netsuite")
    sales_orders = [r for r in records(netsuite, "salesOrder") if r.get("externalId") == reference]
    assert len(sales_orders) == 1, sales_orders
    invoices = [
        r for r in records(netsuite, "invoice") if str(r.get("createdFrom", {}).get("id")) == str(sales_orders[0]["id"])
    ]
    assert len(invoices) == 1, invoices

    carrier = await stack.state("carrier")
    shipments = [s for s in carrier["shipments"] if s.get("reference") == reference]
    bought = [s for s in shipments if s.get("selected_rate")]
    assert len(shipments) == 1 and len(bought) == 1, shipments
    label_tracking = bought[0]["tracking_code"]

    wms = await stack.state("wms")
    assert [r["status"] for r in wms["reservations"] if r["reference_id"] == reference] == ["Consumed"]
    assert len([o for o in wms["orders"] if o["reference_id"] == reference]) == 1

    shopify = await stack.state("shopify")
    (order,) = [o for o in shopify["orders"] if o["id"] == channel_order_id]
    tracking = [f.get("tracking_number") for f in order["fulfillments"]]
    assert tracking == [label_tracking], order["fulfillments"]


async def test_a_signed_webhook_order_goes_to_completed_and_every_system_agrees(stack: Stack) -> None:
    key = await stack.place_order()
    result = await stack.finish(key)

    assert result.status is OrderStatus.COMPLETED, result.state.model_dump_json()
    await assert_one_of_everything(stack, key)
    steps = [s.step for s in result.state.steps_done]
    assert steps[:6] == ["accept", "credit_check", "allocate", "post_to_erp", "buy_label", "release"]
    assert steps[-1] == "invoice"


async def test_lost_answers_and_duplicate_webhooks_still_leave_one_of_everything(stack: Stack) -> None:
    # The ERP and the carrier lose 30% of their answers after committing; every webhook arrives twice.
    for system in ("netsuite", "carrier"):
        await stack.fault(system=system, kind="timeout_after_commit", mutating_only=True, rate=0.3, hold_seconds=0.8)
    for system in ("shopify", "wms"):
        (await stack.sandbox.put(f"/sandbox/webhooks/chaos/{system}", json={"duplicate_rate": 1.0})).raise_for_status()

    keys = [await stack.place_order() for _ in range(4)]
    results = await asyncio.gather(*(stack.finish(key, timeout=120) for key in keys))

    assert [r.status for r in results] == [OrderStatus.COMPLETED] * 4
    faults = (await stack.sandbox.get("/sandbox/faults")).json()
    assert sum(rule["fired"] for rule in faults) > 0, "the faults never fired; the test proved nothing"
    for key in keys:
        await assert_one_of_everything(stack, key)
