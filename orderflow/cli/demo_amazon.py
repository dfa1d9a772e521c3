"""The demo's Amazon side: buyers order on the sandbox Amazon, and the order poller's schedule finds them.

Amazon sends no order webhooks, so an Amazon order reaches a saga only when the poller's Temporal
Schedule (`poll:amazon:{marketplace}`) runs. The demo does not wait two minutes for the next tick:
it triggers the schedule, as `orderflow amazon schedule trigger` does, whenever an order it placed
(or a buyer's cancellation it asked for) is waiting to be seen. Triggers queue behind a running
poll (BUFFER_ONE) and are at least a second apart, since Amazon stamps updates to the second.

A poll that starts many sagas is slow, as Amazon's getOrder allows 0.5 calls a second once its
burst is spent, and the warehouse ships seconds after release. So the orders whose buyer cancels
after the saga has begun go first, while polls are quick, and the other Amazon orders follow.

At the end the sandbox Amazon's records are checked, not the sagas' accounts: every completed order
is SHIPPED on Amazon with the tracking number of the label bought for it, and every cancelled one is
CANCELLED there (the seller's acknowledgement feed, processed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client, ScheduleHandle, ScheduleOverlapPolicy
from temporalio.service import RPCError

from orderflow.canonical.order import Channel, order_key
from orderflow.canonical.saga import order_reference
from orderflow.cli.amazon import SANDBOX_SEARCH_LAG, ensure_schedule, poller_schedule
from orderflow.cli.demo_sandbox import DemoError
from orderflow.cli.demo_sandbox import control as _control

# Polls closer together than this see nothing new: the poller's windows end on whole seconds.
MIN_POLL_GAP_SECONDS = 1.1
# How long a triggered poll may take before the demo stops waiting for it (it may be queued behind one).
POLL_WAIT_SECONDS = 60.0
# Amazon processes the seller's cancellation feed a few sandbox seconds after it is submitted.
FEED_SETTLE_SECONDS = 20.0
POLL_SECONDS = 0.2


async def place_amazon_order(
    sandbox: httpx.AsyncClient, lines: Iterable[tuple[str, int]], *, buyer_cancel_reason: str | None = None
) -> str:
    """A buyer's merchant-fulfilled order on the sandbox Amazon (maybe already asking to cancel); its saga key."""
    body: dict[str, Any] = {
        "fulfillment_channel": "MFN",
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
    }
    if buyer_cancel_reason:
        body["buyer_cancel_reason"] = buyer_cancel_reason
    placed = await _control(sandbox, "POST", "/amazon/sandbox/orders", json=body)
    return order_key(Channel.AMAZON, str(placed["orderId"]))


async def ask_to_cancel(sandbox: httpx.AsyncClient, key: str, reason: str) -> None:
    """The buyer asks Amazon to cancel; Amazon leaves the order open until the seller decides."""
    amazon_order_id = key.rsplit(":", 1)[1]
    await _control(
        sandbox, "POST", f"/amazon/sandbox/orders/{amazon_order_id}/buyer-cancellation", json={"reason": reason}
    )


class AmazonPolls:
    """Polls of one marketplace on request: the poller's schedule triggered, one poll at a time."""

    def __init__(self, client: Client, schedule_id: str) -> None:
        self.client = client
        self.schedule_id = schedule_id
        self.polls = 0
        self.failures: list[str] = []
        self._wanted = asyncio.Event()
        self._asked = 0
        self._finished = 0
        self._polled = asyncio.Condition()
        # Set once every early buyer cancellation has been polled: the other orders may come.
        self.cancels_polled = asyncio.Event()
        self.cancels_polled.set()
        self._cancels_pending = 0

    def expect_cancels(self, count: int) -> None:
        """Buyer cancellations that go first, each needing a quick poll before the warehouse ships."""
        self._cancels_pending += count
        if self._cancels_pending > 0:
            self.cancels_polled.clear()

    def cancel_polled(self) -> None:
        """One early buyer cancellation was polled (or gave up); the last lets the other orders come."""
        self._cancels_pending -= 1
        if self._cancels_pending <= 0:
            self.cancels_polled.set()

    async def poll_once(self) -> None:
        """Ask for a poll and wait until one that began after asking has ended."""
        wanted = self.request()
        async with self._polled:
            await self._polled.wait_for(lambda: self._finished >= wanted)

    async def ensure_schedule(self, marketplace: str, *, task_queue: str, every: timedelta) -> bool:
        """Create the poller's schedule on the demo's task queue unless it exists; True if created."""
        schedule = poller_schedule(
            marketplace,
            every=every,
            overlap=timedelta(minutes=10),
            task_queue=task_queue,
            paused=False,
            search_lag=SANDBOX_SEARCH_LAG,
            schedule_id=self.schedule_id,
        )
        try:
            return await ensure_schedule(self.client, self.schedule_id, schedule)
        except RPCError as exc:
            raise DemoError(f"Temporal refused the Amazon poller's schedule {self.schedule_id}: {exc.message}") from exc

    def request(self) -> int:
        """Ask for a poll soon (an order placed or a cancellation asked for waits to be seen); its number."""
        self._asked += 1
        self._wanted.set()
        return self._asked

    async def run(self) -> None:
        """Trigger the schedule whenever a poll is wanted, waiting for each poll to end before the next."""
        handle = self.client.get_schedule_handle(self.schedule_id)
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            covers = self._asked
            asked = datetime.now(UTC)
            try:
                # A poll still running (a scheduled tick) runs first; this one follows it.
                await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
                self.polls += 1
                await self._until_polled(handle, asked)
            except RPCError as exc:
                # Temporal went away: the orders waiting on this poll report it themselves (they time
                # out with the reason); the trigger keeps serving requests in case it comes back.
                self.failures.append(f"poll of {self.schedule_id} not triggered: {exc.message}")
            async with self._polled:
                self._finished = covers
                self._polled.notify_all()
            await asyncio.sleep(MIN_POLL_GAP_SECONDS)

    async def _until_polled(self, handle: ScheduleHandle, asked: datetime) -> None:
        deadline = time.monotonic() + POLL_WAIT_SECONDS
        since = asked - timedelta(seconds=1)
        while time.monotonic() < deadline:
            info = (await handle.describe()).info
            if not info.running_actions and any(a.started_at >= since for a in info.recent_actions):
                return
            await asyncio.sleep(POLL_SECONDS)


async def check_amazon(
    sandbox: httpx.AsyncClient,
    *,
    completed: list[str],
    cancelled: list[str],
    settle_within: float = FEED_SETTLE_SECONDS,
) -> list[str]:
    """What the sandbox Amazon disagrees with: completed orders shipped with their label, cancelled ones cancelled."""
    deadline = time.monotonic() + settle_within
    while True:
        problems = await _amazon_problems(sandbox, completed, cancelled)
        # A cancellation is Amazon's once its feed is processed, a few seconds after the saga ends.
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.5)


async def _amazon_problems(sandbox: httpx.AsyncClient, completed: list[str], cancelled: list[str]) -> list[str]:
    amazon = await _control(sandbox, "GET", "/sandbox/state/amazon")
    carrier = await _control(sandbox, "GET", "/sandbox/state/carrier")
    orders = {order_key(Channel.AMAZON, str(o["orderId"])): o for o in amazon["orders"]}
    labels: dict[str, set[str]] = {}
    for shipment in carrier["shipments"]:
        if shipment["purchased"] and not shipment.get("is_return"):
            labels.setdefault(str(shipment["reference"]), set()).add(str(shipment.get("tracking_code")))
    problems: list[str] = []
    for key in completed:
        order = orders.get(key)
        if order is None:
            problems.append(f"{key}: not on the sandbox Amazon")
            continue
        tracking = {str(s.get("trackingNumber")) for s in order.get("shipments", [])}
        if order["status"] != "SHIPPED":
            problems.append(f"{key}: Amazon says {order['status']}, not SHIPPED")
        elif not tracking or tracking != labels.get(order_reference(key), set()):
            problems.append(f"{key}: Amazon has tracking {sorted(tracking)}, the labels bought are "
                            f"{sorted(labels.get(order_reference(key), set()))}")  # fmt: skip
    for key in cancelled:
        order = orders.get(key)
        status = order["status"] if order else "missing"
        if status != "CANCELLED":
            problems.append(f"{key}: Amazon says {status}, not CANCELLED (was the cancellation feed sent?)")
    return problems


async def stop_polling(task: asyncio.Task[None] | None) -> None:
    """Stop the demo's poll trigger (it waits for requests for ever)."""
    if task is None:
        return
    task.cancel()
    # Whatever ended it, the orders' own outcomes say what it cost; the report is still printed.
    with contextlib.suppress(asyncio.CancelledError, DemoError, RPCError):
        await task
