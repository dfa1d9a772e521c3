"""Amazon end to end: the running system around the order poller, and the SP-API calls the worker made.

`AmazonStack` is one test's system: the real worker on its own task queue, the webhook service for
the warehouse's and the carrier's webhooks, and the poller's Temporal Schedule as `orderflow amazon
schedule create` builds it (`poller_schedule`), polled with `trigger` as an operator would.
`SpApiCalls` records every request the worker's shared HTTP client sends to the sandbox Amazon and
its answer, so a test can tell a retry of the same call from a different call of the same operation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    WorkflowHandle,
)
from temporalio.service import RPCError

from orderflow.canonical.channel_polling import PollChannelOrdersInput, PollResult
from orderflow.canonical.order import Channel, order_key
from orderflow.canonical.saga import OrderSagaState, OrderStatus, OrderToCashResult
from orderflow.cli.amazon import poller_schedule
from orderflow.settings import Settings
from orderflow.workflows.order_to_cash import OrderToCash

# The SP-API operation of a sandbox path, as the sandbox's call log names it.
_OPERATIONS: list[tuple[str, Callable[[str, list[str]], bool]]] = [
    ("searchOrders", lambda method, parts: method == "GET" and parts == ["orders", "2026-01-01", "orders"]),
    ("getOrder", lambda method, parts: method == "GET" and parts[:3] == ["orders", "2026-01-01", "orders"]),
    ("confirmShipment", lambda method, parts: parts[-1:] == ["shipmentConfirmation"]),
    ("createRestrictedDataToken", lambda method, parts: parts[:1] == ["tokens"]),
    ("createFeedDocument", lambda method, parts: method == "POST" and parts[-1:] == ["documents"]),
    ("getFeedDocument", lambda method, parts: method == "GET" and parts[-2:-1] == ["documents"]),
    ("createFeed", lambda method, parts: method == "POST" and parts[-1:] == ["feeds"]),
    ("getFeed", lambda method, parts: method == "GET" and parts[-2:-1] == ["feeds"]),
    ("patchListingsItem", lambda method, parts: parts[:1] == ["listings"]),
]


def sp_api_operation(method: str, path: str) -> str | None:
    """The SP-API operation a request below the sandbox's `/amazon` mount calls (None: LWA, documents)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] != ["amazon"]:
        return None
    for name, matches in _OPERATIONS:
        if matches(method.upper(), parts[1:]):
            return name
    return None


@dataclass(frozen=True)
class SpApiCall:
    """One SP-API request as the worker sent it: which call it is, when it left and came back, its status."""

    operation: str
    # The same method, URL, body and kind of token: a retry of the same call, not another order's.
    identity: tuple[str, str, bytes, bool]
    sent: float
    answered: float
    status: int


@dataclass
class SpApiCalls:
    """Every SP-API request the worker's HTTP client sent, with its answer (httpx event hooks)."""

    calls: list[SpApiCall] = field(default_factory=list)
    _sent: dict[int, float] = field(default_factory=dict)

    async def on_request(self, request: httpx.Request) -> None:
        """Note when a request leaves."""
        self._sent[id(request)] = time.monotonic()

    async def on_response(self, response: httpx.Response) -> None:
        """Record an SP-API answer against its request."""
        request = response.request
        operation = sp_api_operation(request.method, request.url.path)
        sent = self._sent.pop(id(request), None)
        if operation is None or sent is None:
            return
        token = request.headers.get("x-amz-access-token", "")
        identity = (request.method, str(request.url), request.content, token.startswith("Atz.sprdt"))
        self.calls.append(SpApiCall(operation, identity, sent, time.monotonic(), response.status_code))

    def hooks(self) -> dict[str, list[Any]]:
        """The event hooks to build the worker's `httpx.AsyncClient` with."""
        return {"request": [self.on_request], "response": [self.on_response]}

    def retries_after(self, status: int) -> list[tuple[SpApiCall, float]]:
        """Each call answered `status`, with how long the worker waited before sending that same call again.

        A call never sent again after its answer is left out, so a caller can count them.
        """
        waits: list[tuple[SpApiCall, float]] = []
        for at, call in enumerate(self.calls):
            if call.status != status:
                continue
            again = [c.sent for c in self.calls[at + 1 :] if c.identity == call.identity and c.sent >= call.answered]
            if again:
                waits.append((call, min(again) - call.answered))
        return waits


@dataclass
class AmazonStack:
    """The running system for one Amazon test: sandbox, worker, webhook service, and the poller's schedule."""

    client: Client
    sandbox: httpx.AsyncClient
    settings: Settings
    task_queue: str
    schedule: ScheduleHandle
    sp_api: SpApiCalls
    polled: set[str] = field(default_factory=set)

    @property
    def marketplace(self) -> str:
        """The marketplace the poller reads (the sandbox's only one)."""
        return self.settings.amazon.marketplace_ids[0]

    async def place_order(
        self,
        lines: list[tuple[str, int]],
        *,
        fulfillment_channel: str = "MFN",
        buyer_cancel_reason: str | None = None,
    ) -> dict[str, Any]:
        """A buyer places an order on the sandbox Amazon; its summary (`orderId`, `items`, ...)."""
        body: dict[str, Any] = {
            "fulfillment_channel": fulfillment_channel,
            "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        }
        if buyer_cancel_reason is not None:
            body["buyer_cancel_reason"] = buyer_cancel_reason
        response = await self.sandbox.post("/amazon/sandbox/orders", json=body)
        assert response.status_code == 201, response.text
        placed: dict[str, Any] = response.json()
        return placed

    async def buyer_cancels(self, order_id: str, reason: str) -> dict[str, Any]:
        """The buyer asks Amazon to cancel an order (a request the seller must act on)."""
        response = await self.sandbox.post(
            f"/amazon/sandbox/orders/{order_id}/buyer-cancellation", json={"reason": reason}
        )
        assert response.status_code == 200, response.text
        summary: dict[str, Any] = response.json()
        return summary

    async def settled(self, *orders: dict[str, Any], lag: timedelta) -> None:
        """Wait until a poll's window (which ends `lag` before now, in whole seconds) covers these updates."""
        newest = max(datetime.fromisoformat(o["lastUpdatedTime"].replace("Z", "+00:00")) for o in orders)
        # Amazon stamps to the second, the sandbox keeps the fraction: the window must pass the next second.
        due = newest + lag + timedelta(seconds=1.05)
        pause = (due - datetime.now(UTC)).total_seconds()
        if pause > 0:
            await asyncio.sleep(pause)

    async def trigger_poll(self, timeout: float = 15) -> WorkflowHandle[Any, PollResult]:
        """Trigger the schedule, as `orderflow amazon schedule trigger` does; the poll it started."""
        await self.schedule.trigger()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            description = await self.schedule.describe()
            for action in description.info.recent_actions:
                run = action.action
                if isinstance(run, ScheduleActionExecutionStartWorkflow) and run.workflow_id not in self.polled:
                    self.polled.add(run.workflow_id)
                    return self.client.get_workflow_handle(
                        run.workflow_id, run_id=run.first_execution_run_id, result_type=PollResult
                    )
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the schedule {self.schedule.id} started no poll within {timeout} s")
            await asyncio.sleep(0.1)

    async def poll(self, timeout: float = 60) -> PollResult:
        """One whole poll: triggered, and its result (after any continue-as-new) once it ends."""
        handle = await self.trigger_poll()
        return await asyncio.wait_for(handle.result(), timeout)

    def key(self, order_id: str) -> str:
        """The saga key of an Amazon order."""
        return order_key(Channel.AMAZON, order_id)

    async def saga(self, key: str) -> WorkflowHandle[OrderToCash, OrderToCashResult]:
        """The saga of an order, which must exist already."""
        handle: WorkflowHandle[OrderToCash, OrderToCashResult] = self.client.get_workflow_handle(
            key, result_type=OrderToCashResult
        )
        await handle.describe()
        return handle

    async def has_saga(self, key: str) -> bool:
        """Whether any saga was ever started under this key."""
        try:
            await self.client.get_workflow_handle(key).describe()
        except RPCError:
            return False
        return True

    async def runs(self, key: str) -> int:
        """How many workflow runs have this id: one saga per order means exactly one."""
        return len([run async for run in self.client.list_workflows(f"WorkflowId = '{key}'")])

    async def finish(self, key: str, timeout: float = 60) -> OrderToCashResult:
        """Wait for the saga's end; a saga parked for an operator fails at once, with its reason."""
        handle = await self.saga(key)
        ended = asyncio.ensure_future(handle.result())
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                done, _ = await asyncio.wait({ended}, timeout=0.5)
                if done:
                    return ended.result()
                state = await handle.query(OrderToCash.state)
                if state.needs_attention:
                    raise AssertionError(f"{key} parked at {state.attention_step}: {state.attention_reason}")
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{key} did not end within {timeout} s: {state.model_dump_json()}")
        finally:
            ended.cancel()

    async def until_status(self, key: str, statuses: set[OrderStatus], timeout: float = 30) -> OrderSagaState:
        """Wait until the saga reports one of `statuses`."""
        handle = await self.saga(key)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await handle.query(OrderToCash.state)
            if state.status in statuses:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{key} never reached {sorted(statuses)}: {state.model_dump_json()}")
            await asyncio.sleep(0.1)

    async def state(self, system: str) -> dict[str, Any]:
        """The sandbox's state of one system."""
        response = await self.sandbox.get(f"/sandbox/state/{system}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def amazon_order(self, order_id: str) -> dict[str, Any]:
        """The sandbox Amazon's record of an order: status, items, shipments, refunds."""
        (order,) = [o for o in (await self.state("amazon"))["orders"] if o["orderId"] == order_id]
        return order

    async def until_amazon_order(
        self, order_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        """Wait until the sandbox Amazon's order meets `condition` (feeds take seconds of its clock)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            order = await self.amazon_order(order_id)
            if condition(order):
                return order
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"Amazon order {order_id} never got there: {order}")
            await asyncio.sleep(0.2)


async def create_poller_schedule(
    client: Client,
    *,
    schedule_id: str,
    marketplace: str,
    task_queue: str,
    search_lag: timedelta,
    page_size: int = 100,
    max_pages_per_run: int = 20,
) -> ScheduleHandle:
    """The poller's schedule exactly as the CLI builds it, with a test's own id, search lag and page size.

    Created paused with an hour between ticks, so only the test's triggers poll.
    """
    schedule = poller_schedule(
        marketplace, every=timedelta(hours=1), overlap=timedelta(minutes=10), task_queue=task_queue, paused=True
    )
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    (start,) = action.args
    assert isinstance(start, PollChannelOrdersInput)
    action.args = [
        start.model_copy(
            update={"search_lag": search_lag, "page_size": page_size, "max_pages_per_run": max_pages_per_run}
        )
    ]
    # Each run is this id plus its tick time: a test of its own cannot meet another test's runs.
    action.id = schedule_id
    return await client.create_schedule(schedule_id, schedule)
