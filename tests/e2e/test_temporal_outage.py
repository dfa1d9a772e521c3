"""Temporal down during a flash sale: every order is answered 200 and kept; once it is back, each saga starts once.

Everything is real: a Temporal dev server of the test's own (its state on disk, so a restart keeps
every saga), the orderflow worker (`run_worker`), the webhook service over HTTP with its inbox and
relay, and the sandbox Shopify delivering signed `orders/create` webhooks for orders placed in it.
Only Temporal goes away, while the service and the worker are connected to it and a saga is in
flight. The assertions read what the vendor saw (the sandbox's delivery log, whose timeout is
Shopify's 5 s), what the inbox holds, what Temporal holds (histories, visibility) and what the
sandbox ERP, warehouse and carrier hold. They hold whether the service dispatches a new webhook
itself or leaves it to the relay: neither test reads the receipt's status.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from support.temporal import RestartableDevServer
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical.saga import (
    QUERY_STATUS,
    UPDATE_APPROVE_CREDIT,
    CreditApproval,
    OrderSagaState,
    OrderStatus,
    OrderToCashResult,
)
from orderflow.cli.demo import (
    AMAZON_KINDS,
    CANCEL_WINDOW,
    ORDER_CREATE,
    OrderKind,
    PlannedOrder,
    check_ledger,
    free_stock,
    order_variables,
    plan_d2c_orders,
    plan_orders,
)
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings
from orderflow.store.db import Database, upgrade
from orderflow.store.inbox import InboxEvent
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.worker import run_worker

pytestmark = pytest.mark.integration

T = TypeVar("T")
# From Temporal's return to every saga started: the relay's backoff (it doubles while Temporal is
# away) and the worker's poll backoff (up to 10 s) both run out well within this.
BACK_WITHIN = 60.0
# Placing the orders (the sandbox Shopify's cost bucket paces 200 to ~20 s) and the sandbox
# delivering them, one at a time as its outbox does, each within Shopify's 5 s timeout.
DELIVERED_WITHIN = 60.0
# The sandbox warehouse ships a released order this long after it was sent there.
SHIP_AFTER_SECONDS = 0.5
# Longer than the SDK retries a worker's own calls (~10 s): what the worker was completing when
# Temporal left (a workflow task, an activity's result) is lost, and the server must hand it out again.
WORKER_OUTAGE_SECONDS = 15.0


@dataclass
class OutageStack:
    """The running system of one test, with a Temporal that can be stopped and started again."""

    temporal: RestartableDevServer
    # The worker's client, made before the outage and kept across it (as a running worker keeps it).
    client: Client
    sandbox: httpx.AsyncClient
    shopify: ShopifyClient
    database: Database
    settings: Settings
    task_queue: str

    async def place(self, planned: PlannedOrder) -> str:
        """Place an order on the sandbox Shopify, which sends `orders/create` to the webhook service; its key."""
        created = (await self.shopify.execute(ORDER_CREATE, order_variables(planned)))["orderCreate"]
        assert created["userErrors"] == [], created["userErrors"]
        return f"order:shopify:{created['order']['legacyResourceId']}"

    async def state(self, system: str) -> dict[str, Any]:
        """One simulated system's records."""
        response = await self.sandbox.get(f"/sandbox/state/{system}")
        response.raise_for_status()
        return dict(response.json())

    async def ship_after(self, seconds: float | None) -> None:
        """The sandbox warehouse ships a released order after `seconds` (None: never, the sagas wait)."""
        (await self.sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": seconds})).raise_for_status()

    async def delivered(self, keys: list[str]) -> list[dict[str, Any]] | None:
        """The sandbox's `orders/create` deliveries of these orders once all are settled; fails on any refused."""
        ids = {channel_id(key) for key in keys}
        response = await self.sandbox.get("/sandbox/webhooks/deliveries", params={"system": "shopify"})
        response.raise_for_status()
        ours = [d for d in response.json() if d["topic"] == "orders/create" and str(json.loads(d["body"])["id"]) in ids]
        # Every attempt must succeed: one that timed out or was refused is a vendor retrying an
        # order, which is what the inbox exists to make unnecessary. Fail at once, not at the deadline.
        refused = [(d["event_id"], a) for d in ours for a in d["attempts"] if a["status_code"] != 200]
        assert refused == [], f"{len(refused)} attempts were not answered 200 in time, e.g. {refused[:3]}"
        return ours if len(ours) == len(keys) and all(d["status"] == "delivered" for d in ours) else None

    async def inbox(self, keys: list[str]) -> list[InboxEvent]:
        """The inbox rows of these orders' `orders/create` deliveries."""
        ids = {channel_id(key) for key in keys}
        async with self.database.session() as session:
            query = select(InboxEvent).where(InboxEvent.topic == "orders/create")
            rows = (await session.execute(query)).scalars().all()
        return [row for row in rows if str(json.loads(row.body)["id"]) in ids]

    async def starts(self, key: str) -> int:
        """How many times Temporal started a saga under this key (its history's start events)."""
        handle = self.client.get_workflow_handle(key)
        kinds = [event.event_type async for event in handle.fetch_history_events()]
        return kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)

    async def sagas(self) -> Counter[str]:
        """Every order saga this Temporal holds, by workflow id (a second run under one id would count twice)."""
        return Counter([w.id async for w in self.client.list_workflows("WorkflowType = 'OrderToCash'")])

    async def started(self, key: str) -> bool:
        """Whether Temporal holds a saga under this key (no worker needed to tell)."""
        try:
            await self.client.get_workflow_handle(key).describe()
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return False
        return True

    async def saga_status(self, key: str) -> OrderSagaState | None:
        """The saga's state as it reports it, or None while it has not started."""
        try:
            state: OrderSagaState = await self.client.get_workflow_handle(key).query(
                QUERY_STATUS, result_type=OrderSagaState
            )
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
            return None
        return state

    async def reached(self, key: str, wanted: Callable[[OrderStatus], bool], what: str) -> OrderSagaState:
        """The saga's state once its status is one `wanted` accepts (it may not have started yet)."""

        async def check() -> OrderSagaState | None:
            state = await self.saga_status(key)
            return state if state is not None and wanted(state.status) else None

        return await eventually(check, within=BACK_WITHIN, what=f"{key} {what}")

    async def cancel_once_reserved(self, key: str) -> None:
        """As the demo's buyer does: cancel the order on Shopify once its stock is reserved."""
        await self.reached(key, lambda status: status in CANCEL_WINDOW, "reserving stock")
        await self.shopify.cancel_order(channel_id(key), reason="CUSTOMER", staff_note="buyer cancelled")

    async def see_through(self, key: str, planned: PlannedOrder) -> OrderToCashResult:
        """Approve a credit hold as an operator would (as the demo does), and await the saga's end."""
        if planned.kind is OrderKind.CREDIT_HOLD:
            await self.reached(key, lambda status: status is OrderStatus.CREDIT_HOLD, "holding for credit")
            await self.client.get_workflow_handle(key).execute_update(
                UPDATE_APPROVE_CREDIT, CreditApproval(approved_by="ops-oncall", note="approved after the outage")
            )
        handle: WorkflowHandle[Any, OrderToCashResult] = self.client.get_workflow_handle(
            key, result_type=OrderToCashResult
        )
        try:
            await self.reached(key, lambda _: True, "starting")
            return await asyncio.wait_for(handle.result(), BACK_WITHIN)
        except TimeoutError:
            state = await self.saga_status(key)
            where = state.model_dump_json(include={"status", "attention_step", "attention_reason"}) if state else "-"
            raise AssertionError(
                f"{key} ({planned.kind.value}) did not end within {BACK_WITHIN:g} s: {where}"
            ) from None


async def _at_least(sagas: Awaitable[Counter[str]], expected: Counter[str]) -> Counter[str] | None:
    listed = await sagas
    return listed if set(listed) >= set(expected) else None


def channel_id(key: str) -> str:
    """The Shopify order id in an order key (`order:shopify:<id>`)."""
    return key.rsplit(":", 1)[1]


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """The first truthy result of `check`, polled until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {within:g} s")
        await asyncio.sleep(0.25)


@pytest.fixture
async def stack(
    tmp_path: Path, sandbox: httpx.AsyncClient, settings: Settings, http: httpx.AsyncClient
) -> AsyncIterator[OutageStack]:
    """Temporal of the test's own and the webhook service (with its own inbox), fed by the sandbox Shopify."""
    temporal = RestartableDevServer(tmp_path)
    client = await temporal.start()
    url = f"sqlite:///{tmp_path / 'orderflow.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = settings.model_copy(update={"database_url": url})
    queue = f"outage-{uuid.uuid4()}"
    # The service reaches Temporal as production does: by address, connecting on first use.
    gateway = TemporalGateway(temporal.address, temporal.namespace, task_queue=queue)
    database = Database(url)
    try:
        with BackgroundServer(create_app(settings, temporal=gateway)) as hooks:
            for system, topics in {"shopify": ["orders/create", "orders/cancelled"], "wms": ["order.shipped"]}.items():
                response = await sandbox.post(
                    f"/sandbox/webhooks/subscriptions/{system}",
                    json={"topics": topics, "url": f"{hooks.url}/webhooks/{system}"},
                )
                response.raise_for_status()
            yield OutageStack(
                temporal=temporal,
                client=client,
                sandbox=sandbox,
                shopify=ShopifyClient(http, settings.shopify),
                database=database,
                settings=settings,
                task_queue=queue,
            )
    finally:
        await database.dispose()
        await temporal.stop()


@pytest.fixture
async def worker(stack: OutageStack) -> AsyncIterator[asyncio.Task[None]]:
    """The orderflow worker (`run_worker`, as `orderflow worker` runs it) on the stack's queue and database."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(stack.settings, client=stack.client, task_queue=stack.task_queue, stop=stop))
    try:
        yield task
    finally:
        # A test that failed mid-outage: the worker stops cleanly only with its server there.
        if not stack.temporal.running:
            await stack.temporal.start()
        stop.set()
        await asyncio.wait_for(task, 30)


async def connected_with_a_saga_in_flight(stack: OutageStack, planned: PlannedOrder) -> str:
    """One order through before the outage: the service is connected to Temporal, and the order's saga runs on."""
    key = await stack.place(planned)
    await eventually(lambda: stack.started(key), within=20, what=f"{key} starting before the outage")
    return key


async def test_two_hundred_orders_while_temporal_is_down_are_kept_and_each_starts_one_saga_once_it_is_back(
    stack: OutageStack,
) -> None:
    # No worker: what is checked is that each saga starts once, which Temporal records without one.
    # (The sandbox WMS allows 150 calls a minute, so 200 sagas would take minutes to reach the ERP;
    # the next test takes a demo's worth of orders all the way with the worker.)
    plan = plan_d2c_orders(201, free_stock(await stack.state("wms")), seed=4)
    before = await connected_with_a_saga_in_flight(stack, plan[0])
    began = time.monotonic()

    await stack.temporal.stop()
    keys = [await stack.place(planned) for planned in plan[1:]]
    deliveries = await eventually(lambda: stack.delivered(keys), within=DELIVERED_WITHIN, what="200 deliveries")
    stored = await stack.inbox(keys)
    received = time.monotonic()

    # Every delivery was answered 200 at its first attempt (within the vendor's timeout), and kept.
    assert [len(d["attempts"]) for d in deliveries] == [1] * 200
    assert len(stored) == 200
    assert sorted(str(json.loads(row.body)["id"]) for row in stored) == sorted(channel_id(k) for k in keys)

    await stack.temporal.start()
    back = time.monotonic()

    async def all_dispatched() -> list[InboxEvent] | None:
        rows = await stack.inbox(keys)
        return rows if [row.status for row in rows] == ["dispatched"] * 200 else None

    rows = await eventually(all_dispatched, within=BACK_WITHIN, what="the relay dispatching all 200")
    dispatched = time.monotonic()
    assert sorted(row.workflow_id or "" for row in rows) == sorted(keys)
    assert sum(row.deliveries for row in rows) == 200
    # One saga per order, each started once, and none for anything else (visibility may lag a moment).
    expected = Counter([before, *keys])
    listed = await eventually(
        lambda: _at_least(stack.sagas(), expected), within=10, what="visibility listing every saga"
    )
    assert listed == expected
    assert await asyncio.gather(*(stack.starts(key) for key in keys)) == [1] * 200
    print(
        f"\n200 orders: placed and answered in {received - began:.1f} s; "
        f"all dispatched {dispatched - back:.1f} s after Temporal came back"
    )


async def test_demo_orders_while_temporal_is_down_all_reach_their_end_once_it_is_back(
    stack: OutageStack, worker: asyncio.Task[None]
) -> None:
    # The warehouse ships nothing until the buyers below have cancelled: in the demo a cancellation
    # races the warehouse's ship timer, and after an outage every saga rushes at once. That race is
    # the demo's, not the outage's, so it is taken out.
    await stack.ship_after(None)
    before = await connected_with_a_saga_in_flight(stack, plan_d2c_orders(1, free_stock(await stack.state("wms")))[0])
    # The demo's mix: D2C and B2B orders, credit holds an operator approves, orders cancelled on Shopify.
    plan = plan_orders(20, free_stock(await stack.state("wms")))
    # (Shopify's: webhooks are what an outage of Temporal puts at risk; Amazon's poller waits it out.)
    assert {p.kind for p in plan} == set(OrderKind) - AMAZON_KINDS
    began = time.monotonic()

    await stack.temporal.stop()
    keys = [await stack.place(planned) for planned in plan]
    deliveries = await eventually(lambda: stack.delivered(keys), within=DELIVERED_WITHIN, what="20 deliveries")
    assert [len(d["attempts"]) for d in deliveries] == [1] * 20
    assert len(await stack.inbox(keys)) == 20
    received = time.monotonic()
    await asyncio.sleep(max(0.0, began + WORKER_OUTAGE_SECONDS - received))
    # The worker rides out the outage: it neither exits nor fails.
    assert not worker.done()

    await stack.temporal.start()
    back = time.monotonic()
    # The buyers cancel, and those sagas end, before the warehouse ships anything.
    by_key = dict(zip(keys, plan, strict=True))
    cancels = [key for key, planned in by_key.items() if planned.kind is OrderKind.CHANNEL_CANCEL]
    await asyncio.gather(*(stack.cancel_once_reserved(key) for key in cancels))
    ended = dict(
        zip(cancels, await asyncio.gather(*(stack.see_through(key, by_key[key]) for key in cancels)), strict=True)
    )
    await stack.ship_after(SHIP_AFTER_SECONDS)
    others = [key for key in keys if key not in ended]
    ended |= dict(
        zip(others, await asyncio.gather(*(stack.see_through(key, by_key[key]) for key in others)), strict=True)
    )
    results = [ended[key] for key in keys]
    finished = time.monotonic()

    assert [r.status for r in results] == [p.expected for p in plan], [r.state.attention_reason for r in results]
    # The saga in flight when Temporal went away finished too, on the same worker.
    in_flight = stack.client.get_workflow_handle(before, result_type=OrderToCashResult)
    assert (await asyncio.wait_for(in_flight.result(), BACK_WITHIN)).status is OrderStatus.COMPLETED
    expected = Counter([before, *keys])
    assert await eventually(lambda: _at_least(stack.sagas(), expected), within=10, what="visibility") == expected
    assert await asyncio.gather(*(stack.starts(key) for key in keys)) == [1] * 20
    assert [row.status for row in await stack.inbox(keys)] == ["dispatched"] * 20
    # One ERP sales order and one purchased label per completed order (the demo's own ledger check).
    completed = [key for key, r in zip(keys, results, strict=True) if r.status is OrderStatus.COMPLETED]
    ledger = await check_ledger(stack.sandbox, [before, *completed])
    assert ledger.ok and ledger.checked == len(completed) + 1, ledger.problems
    assert not worker.done()
    print(
        f"\n20 demo orders: placed and answered in {received - began:.1f} s; "
        f"all at their end {finished - back:.1f} s after Temporal came back"
    )
