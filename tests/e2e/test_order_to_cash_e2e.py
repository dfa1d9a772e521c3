"""Order to cash end to end: a signed Shopify webhook to COMPLETED on the real dev server and worker.

Everything is real except the vendors: the Temporal dev server, the worker with the real
activities and adapters, the webhook service over HTTP, and the sandbox delivering signed webhooks
(Shopify `orders/create`, the WMS's `order.shipped`). The assertions read the sandbox's state:
what the ERP, the warehouse, the carrier and the store hold at the end.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from integration.test_shopify_contract import ORDER_CREATE, order_input
from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import OrderSagaState, OrderStatus, OrderToCashResult, order_reference
from orderflow.cli import app as cli_app
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings
from orderflow.store.db import Database
from orderflow.store.inbox import InboxEvent
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.worker import build_worker
from orderflow.workflows.order_to_cash import OrderToCash

pytestmark = pytest.mark.integration

D2C_LINES = [("BOLT-M8-S", 2), ("NUT-M8-M", 1)]
CLIENT_TIMEOUT_SECONDS = 1.0
HOLD_SECONDS = 1.5


@dataclass
class Stack:
    """The running system for one test: sandbox, webhook service, worker, and a Shopify client."""

    client: Client
    sandbox: httpx.AsyncClient
    shopify: ShopifyClient
    settings: Settings
    http: httpx.AsyncClient
    service_url: str

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
    # Lost responses must surface as timeouts quickly, so the retries happen within the test; but
    # not so quickly that a busy 2-core machine (sandbox, service and worker share this process)
    # turns ordinary slow answers into timeouts. Faults hold lost answers for HOLD_SECONDS.
    timeouts = {"timeout_seconds": CLIENT_TIMEOUT_SECONDS}
    settings = settings.model_copy(
        update={
            "netsuite": settings.netsuite.model_copy(update=timeouts),
            "carrier": settings.carrier.model_copy(update=timeouts),
            "wms": settings.wms.model_copy(update=timeouts),
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
            yield Stack(
                client=dev_server.client,
                sandbox=sandbox,
                shopify=ShopifyClient(http, settings.shopify),
                settings=settings,
                http=http,
                service_url=hooks.url,
            )


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
        await stack.fault(
            system=system, kind="timeout_after_commit", mutating_only=True, rate=0.3, hold_seconds=HOLD_SECONDS
        )
    for system in ("shopify", "wms"):
        (await stack.sandbox.put(f"/sandbox/webhooks/chaos/{system}", json={"duplicate_rate": 1.0})).raise_for_status()

    keys = [await stack.place_order() for _ in range(4)]
    results = await asyncio.gather(*(stack.finish(key, timeout=180) for key in keys))

    assert [r.status for r in results] == [OrderStatus.COMPLETED] * 4
    faults = (await stack.sandbox.get("/sandbox/faults")).json()
    assert sum(rule["fired"] for rule in faults) > 0, "the faults never fired; the test proved nothing"
    for key in keys:
        await assert_one_of_everything(stack, key)


async def orderflow_cli(dev_server: WorkflowEnvironment, *args: str) -> Result:
    """Run `orderflow ...` as an operator would, against the test's Temporal server."""
    env = {"TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host, "USER": "ops-oncall"}
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)


async def until_parked(stack: Stack, key: str, step: str, timeout: float = 30) -> OrderSagaState:
    handle = await stack.saga(key)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await handle.query(OrderToCash.state)
        if state.needs_attention and state.attention_step == step:
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{key} never parked at {step}: {state.model_dump_json()}")
        await asyncio.sleep(0.1)


async def test_a_parked_saga_cancelled_from_the_cli_undoes_every_system(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    # The warehouse takes the order but its answer is lost, and the read-back is refused: the saga
    # parks at release with a real WMS order behind it. The warehouse must not ship it meanwhile
    # (if it did, the saga would rightly refuse the cancel: see the next test).
    (await stack.sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": None})).raise_for_status()
    await stack.fault(system="wms", method="POST", path="/2026-01/order", kind="timeout_after_commit", times=1,
                      hold_seconds=HOLD_SECONDS)  # fmt: skip
    await stack.fault(system="wms", method="GET", path="/2026-01/order", kind="error", status=400, times=1)
    key = await stack.place_order()
    state = await until_parked(stack, key, "release")
    assert "ValidationRejectedError" in (state.attention_reason or "")

    cancelled = await orderflow_cli(dev_server, "orders", "cancel", key, "--reason", "warehouse data is wrong")
    assert cancelled.exit_code == 0, cancelled.output
    result = await stack.finish(key)
    assert result.status is OrderStatus.CANCELLED

    reference = order_reference(key)
    wms = await stack.state("wms")
    assert [r["status"] for r in wms["reservations"] if r["reference_id"] == reference] != ["Active"]
    assert [o["status"] for o in wms["orders"] if o["reference_id"] == reference] == ["Cancelled"]
    assert all(level["committed"] == 0 for level in wms["stock"]), "stock is still committed to the order"
    netsuite = await stack.state("netsuite")
    (sales_order,) = [r for r in records(netsuite, "salesOrder") if r.get("externalId") == reference]
    assert sales_order["status"]["refName"] == "Closed", sales_order["status"]
    carrier = await stack.state("carrier")
    (shipment,) = [s for s in carrier["shipments"] if s.get("reference") == reference]
    assert shipment["refund_status"] in ("submitted", "refunded")
    # Shopify cancels through an asynchronous job: wait for it to finish, as an operator would.
    for _ in range(50):
        shopify = await stack.state("shopify")
        (order,) = [o for o in shopify["orders"] if o["id"] == int(key.rsplit(":", 1)[1])]
        if order["cancelled_at"] is not None:
            break
        await asyncio.sleep(0.1)
    assert order["cancelled_at"] is not None, "the order was never cancelled on Shopify"


async def test_a_cancel_after_shipment_is_refused_by_the_cli_with_the_reason(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    # Invoicing fails permanently, so the saga is still running, parked, after the goods shipped.
    await stack.fault(system="netsuite", method="POST", path="/services/rest/record/v1/salesOrder/*/!transform/invoice",
                      kind="error", status=400)  # fmt: skip
    key = await stack.place_order()
    await until_parked(stack, key, "invoice")

    refused = await orderflow_cli(dev_server, "orders", "cancel", key, "--reason", "customer changed their mind")
    assert refused.exit_code == 1
    assert "has shipped" in refused.output and "a return is the only way to undo it" in refused.output

    (await stack.sandbox.delete("/sandbox/faults")).raise_for_status()
    retried = await orderflow_cli(dev_server, "orders", "retry", key)
    assert retried.exit_code == 0, retried.output
    assert (await stack.finish(key)).status is OrderStatus.COMPLETED
    await assert_one_of_everything(stack, key)


async def test_an_unmapped_sku_parks_then_completes_after_xref_set_and_retry(
    stack: Stack, dev_server: WorkflowEnvironment
) -> None:
    # The ERP renumbers an item, as ERPs do: the channel's SKU no longer finds it by name.
    sku = "WASH-M8-S"
    item = CATALOG_BY_SKU[sku]
    netsuite = NetSuiteClient(stack.http, stack.settings.netsuite)
    await netsuite._call("PATCH", f"/record/v1/inventoryItem/{item.erp_item_id}", body={"itemId": "ERP-WASHER-M8-S"})

    key = await stack.place_order([(sku, 1)])
    parked = await until_parked(stack, key, "accept")
    assert f"no ERP item for shopify SKU '{sku}'" in (parked.attention_reason or "")

    # Operators find it in the order view: the read API and the CLI, neither asking Temporal.
    database = stack.settings.database_url
    assert database is not None
    for _ in range(50):
        view = (await stack.http.get(f"{stack.service_url}/orders/{key}")).json()
        if view.get("needs_attention"):
            break
        await asyncio.sleep(0.1)
    assert view["needs_attention"] and sku in view["attention_reason"]
    listed = await orderflow_cli(
        dev_server, "orders", "list", "--needs-attention", "--json", "--database-url", database
    )
    assert listed.exit_code == 0, listed.output
    assert key in {row["key"] for row in json.loads(listed.output)}

    mapped = await orderflow_cli(
        dev_server, "xref", "set", "sku", "shopify", sku, "--erp-item", item.erp_item_id, "--url", database
    )
    assert mapped.exit_code == 0, mapped.output
    retried = await orderflow_cli(dev_server, "orders", "retry", key)
    assert retried.exit_code == 0, retried.output

    result = await stack.finish(key)
    assert result.status is OrderStatus.COMPLETED, result.state.model_dump_json()
    erp_order = await netsuite.get_sales_order(external_id=order_reference(key))
    assert [line.erp_item_id for line in erp_order.lines] == [item.erp_item_id]


async def test_a_webhook_storm_leaves_one_saga_and_one_sales_order_per_order_and_counts_every_delivery(
    stack: Stack,
) -> None:
    keys = [await stack.place_order() for _ in range(10)]
    ids = {key.rsplit(":", 1)[1] for key in keys}

    def ours(delivery: dict[str, Any]) -> bool:
        return delivery["topic"] == "orders/create" and str(json.loads(delivery["body"])["id"]) in ids

    originals: list[dict[str, Any]] = []
    for _ in range(100):
        deliveries = (await stack.sandbox.get("/sandbox/webhooks/deliveries", params={"system": "shopify"})).json()
        originals = [d for d in deliveries if ours(d) and d["status"] == "delivered"]
        if len(originals) == len(keys):
            break
        await asyncio.sleep(0.1)
    assert len(originals) == len(keys)

    # 30% exact duplicates: Shopify delivering the same event again (same X-Shopify-Event-Id).
    for delivery in originals[:3]:
        (await stack.sandbox.post(f"/sandbox/webhooks/deliveries/{delivery['id']}/replay")).raise_for_status()
    # 10%: the same order under a new event id (an app re-triggering it). The HMAC covers only the body.
    again = originals[3]
    headers = {**again["headers_sent"], "X-Shopify-Event-Id": str(uuid.uuid4())}
    response = await stack.http.post(f"{stack.service_url}/webhooks/shopify", content=again["body"], headers=headers)
    assert response.status_code == 200, response.text

    results = await asyncio.gather(*(stack.finish(key, timeout=120) for key in keys))
    assert [r.status for r in results] == [OrderStatus.COMPLETED] * len(keys)

    netsuite = await stack.state("netsuite")
    for key in keys:
        reference = order_reference(key)
        assert len([r for r in records(netsuite, "salesOrder") if r.get("externalId") == reference]) == 1

    # Every delivery is in the inbox: 10 events, 3 of them delivered twice, and 1 under a second event id.
    assert stack.settings.database_url is not None
    database = Database(stack.settings.database_url)
    try:
        async with database.session() as session:
            rows = (
                (await session.execute(select(InboxEvent).where(InboxEvent.topic == "orders/create"))).scalars().all()
            )
    finally:
        await database.dispose()
    mine = [row for row in rows if str(json.loads(row.body)["id"]) in ids]
    assert len(mine) == len(keys) + 1
    assert sum(row.deliveries for row in mine) == len(keys) + 3 + 1
    assert sorted(row.status for row in mine).count("duplicate") == 1
