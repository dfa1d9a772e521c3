"""The channel order poller on the time-skipping server, with a stand-in channel that records what happened.

The stand-in channel holds orders (id, what their last change means, who ships them, when) and
answers the poller's search page by page; its `start_order_saga` and `signal_cancel` keep the
sagas started and the cancels signalled in plain lists, which the tests assert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support.temporal import start_time_skipping_server
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

from orderflow.activities.channel_polling import ChannelPollingActivities, change_of
from orderflow.adapters.amazon import AmazonClient, AmazonOrderSummary
from orderflow.canonical import Channel
from orderflow.canonical.channel_polling import (
    ACTIVITY_LIST_CHANGES,
    ACTIVITY_SIGNAL_CANCEL,
    ACTIVITY_START_ORDER,
    ChannelOrderChange,
    ChannelOrderChangePage,
    ChannelOrderStatus,
    FulfilledBy,
    ListChannelOrderChangesInput,
    PollChannelOrdersInput,
    PollResult,
    SignalCancelInput,
    SignalCancelResult,
    StartOrderSagaInput,
    StartOrderSagaResult,
    StartOutcomeKind,
)
from orderflow.canonical.saga import SIGNAL_CANCEL, CancelRequest, CancelSource, OrderToCashInput
from orderflow.cli import app
from orderflow.sandbox import seed
from orderflow.settings import AmazonSettings
from orderflow.workflows.amazon_orders import ChannelOrderPoller, ChannelOrderResync

MARKETPLACE = "ATVPDKIKX0DER"


@dataclass
class FakeChannel:
    """A channel account's orders, and what the poller did with them."""

    orders: dict[str, ChannelOrderChange] = field(default_factory=dict)
    # Order ids the channel says are fulfilled by the marketplace only once the full order is read.
    afn_on_read: set[str] = field(default_factory=set)
    # Order ids whose read fails for good (bad data a person must fix).
    broken: set[str] = field(default_factory=set)
    # Searches to fail (transiently) before answering: an outage of the channel's API.
    outage_searches: int = 0
    # Search calls, 1-based, that fail; counted across the whole test.
    fail_search_calls: set[int] = field(default_factory=set)
    searches: list[tuple[datetime, datetime, str | None]] = field(default_factory=list)
    failed_searches: int = 0
    starts: list[str] = field(default_factory=list)
    sagas: set[str] = field(default_factory=set)
    cancels: list[str] = field(default_factory=list)
    starting: int = 0
    most_starting_at_once: int = 0

    def add(
        self,
        order_id: str,
        at: datetime,
        status: ChannelOrderStatus = ChannelOrderStatus.NEW,
        fulfilled_by: FulfilledBy = FulfilledBy.MERCHANT,
    ) -> None:
        self.orders[order_id] = ChannelOrderChange(
            channel_order_id=order_id, status=status, fulfilled_by=fulfilled_by, last_updated=at
        )

    def activities(self) -> list[Callable[..., Any]]:
        """Same-named stand-ins for the poller's activities."""

        @activity.defn(name=ACTIVITY_LIST_CHANGES)
        async def list_channel_order_changes(input: ListChannelOrderChangesInput) -> ChannelOrderChangePage:
            call = len(self.searches) + self.failed_searches + 1
            if self.outage_searches > 0 or call in self.fail_search_calls:
                self.outage_searches = max(0, self.outage_searches - 1)
                self.failed_searches += 1
                raise ApplicationError("channel HTTP 503: service unavailable", type="TransientError")
            self.searches.append((input.updated_after, input.updated_before, input.page))
            matching = sorted(
                (o for o in self.orders.values() if input.updated_after <= o.last_updated < input.updated_before),
                key=lambda o: (o.last_updated, o.channel_order_id),
            )
            offset = int(input.page or 0)
            rest = offset + input.page_size
            return ChannelOrderChangePage(
                changes=matching[offset:rest], next_page=str(rest) if rest < len(matching) else None
            )

        @activity.defn(name=ACTIVITY_START_ORDER)
        async def start_order_saga(input: StartOrderSagaInput) -> StartOrderSagaResult:
            key = f"order:{input.channel.value}:{input.channel_order_id}"
            if input.channel_order_id in self.broken:
                raise ApplicationError("order has no lines", type="ValidationRejectedError", non_retryable=True)
            if input.channel_order_id in self.afn_on_read:
                reason = "AFN order, fulfilled by Amazon"
                return StartOrderSagaResult(order_key=key, outcome=StartOutcomeKind.SKIPPED, reason=reason)
            self.starting += 1
            self.most_starting_at_once = max(self.most_starting_at_once, self.starting)
            await asyncio.sleep(0.02)  # long enough for the rest of a batch to arrive
            self.starting -= 1
            self.starts.append(input.channel_order_id)
            if key in self.sagas:
                return StartOrderSagaResult(order_key=key, outcome=StartOutcomeKind.DUPLICATE)
            self.sagas.add(key)
            return StartOrderSagaResult(order_key=key, outcome=StartOutcomeKind.STARTED)

        @activity.defn(name=ACTIVITY_SIGNAL_CANCEL)
        async def signal_cancel(input: SignalCancelInput) -> SignalCancelResult:
            key = f"order:{input.channel.value}:{input.channel_order_id}"
            if key not in self.sagas:
                return SignalCancelResult(order_key=key, signalled=False, reason="no saga running for this order")
            self.cancels.append(input.channel_order_id)
            return SignalCancelResult(order_key=key, signalled=True)

        return [list_channel_order_changes, start_order_saga, signal_cancel]


def poll_input(cursor: datetime | None, **overrides: Any) -> PollChannelOrdersInput:
    return PollChannelOrdersInput(channel=Channel.AMAZON, account_id=MARKETPLACE, cursor=cursor, **overrides)


async def poll(env: WorkflowEnvironment, channel: FakeChannel, input: PollChannelOrdersInput) -> PollResult:
    """Run one poll to its end (through any continue-as-new), as one scheduled tick would."""
    queue = f"poller-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[ChannelOrderPoller], activities=channel.activities()):
        return await env.client.execute_workflow(
            ChannelOrderPoller.run, input, id=f"poll:amazon:{MARKETPLACE}-{uuid.uuid4()}", task_queue=queue
        )


def next_tick(result: PollResult, **overrides: Any) -> PollChannelOrdersInput:
    """The next scheduled run's starting point: the last completed run's cursor and seen orders."""
    return poll_input(result.cursor, seen=result.seen, **overrides)


async def test_the_look_back_overlap_finds_late_orders_without_handling_any_twice(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.add("111-0000001-0000001", now - timedelta(minutes=40))
    channel.add("111-0000001-0000002", now - timedelta(minutes=5))

    first = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))
    assert sorted(first.started) == ["order:amazon:111-0000001-0000001", "order:amazon:111-0000001-0000002"]
    # The cursor stops short of now (the channel's search may not end closer) and remembers the
    # orders the next run's overlap will see again.
    assert now - timedelta(minutes=2, seconds=1) <= first.cursor < now - timedelta(minutes=1)
    assert first.cursor.microsecond == 0  # channels stamp to the second
    assert set(first.seen) == {"111-0000001-0000002"}

    # Written late: updated before the first run's cursor, but visible only after it ran.
    channel.add("111-0000001-0000003", first.cursor - timedelta(minutes=1))
    second = await poll(time_skipping, channel, next_tick(first))

    after, _before, _page = channel.searches[-1]
    assert after == first.cursor - timedelta(minutes=10)
    assert sorted(second.started) == ["order:amazon:111-0000001-0000003"]
    assert second.duplicates == [] and second.cursor >= first.cursor
    # Every order started exactly once, though the second search returned the second order again.
    assert sorted(channel.starts) == ["111-0000001-0000001", "111-0000001-0000002", "111-0000001-0000003"]


async def test_a_later_change_of_an_order_seen_in_the_overlap_is_still_handled(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.add("111-0000002-0000001", now - timedelta(minutes=6))
    first = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))

    # The buyer asks to cancel: the same order, a newer update, still inside the overlap.
    channel.add("111-0000002-0000001", first.cursor - timedelta(seconds=30), ChannelOrderStatus.CANCEL_REQUESTED)
    second = await poll(time_skipping, channel, next_tick(first))

    assert sorted(channel.starts) == ["111-0000002-0000001"]
    assert second.cancels_signalled == ["order:amazon:111-0000002-0000001"]
    assert sorted(channel.cancels) == ["111-0000002-0000001"]


async def test_every_page_of_the_search_is_handled(time_skipping: WorkflowEnvironment) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    ids = [f"111-0000003-{n:07d}" for n in range(7)]
    for n, order_id in enumerate(ids):
        channel.add(order_id, now - timedelta(minutes=50 - n))

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1), page_size=3))

    assert result.pages == 3
    assert [page for _after, _before, page in channel.searches] == [None, "3", "6"]
    assert sorted(channel.starts) == ids
    assert sorted(result.started) == [f"order:amazon:{order_id}" for order_id in ids]


async def test_a_full_page_starts_its_orders_a_batch_at_a_time(time_skipping: WorkflowEnvironment) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    ids = [f"111-0000012-{n:07d}" for n in range(25)]
    for n, order_id in enumerate(ids):
        channel.add(order_id, now - timedelta(minutes=50, seconds=-n))

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))

    assert result.pages == 1 and sorted(channel.starts) == ids
    # The channel's order reads are rate limited: never a whole page of them at once.
    assert 1 < channel.most_starting_at_once <= 10


async def test_a_long_search_continues_as_new_keeping_its_cursor_page_and_seen_orders(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    ids = [f"111-0000004-{n:07d}" for n in range(7)]
    for n, order_id in enumerate(ids):
        # All but the first land inside the final overlap, so the result must remember them.
        channel.add(order_id, now - timedelta(minutes=50 - 7 * n))
    cursor = now - timedelta(hours=1)
    queue = f"poller-{uuid.uuid4()}"
    workflow_id = f"poll:amazon:{MARKETPLACE}-{uuid.uuid4()}"
    async with Worker(
        time_skipping.client, task_queue=queue, workflows=[ChannelOrderPoller], activities=channel.activities()
    ):
        handle = await time_skipping.client.start_workflow(
            ChannelOrderPoller.run,
            poll_input(cursor, page_size=2, max_pages_per_run=2, overlap=timedelta(minutes=45)),
            id=workflow_id,
            task_queue=queue,
        )
        result = await handle.result()
        first_run = time_skipping.client.get_workflow_handle(workflow_id, run_id=handle.first_execution_run_id)
        history = await first_run.fetch_history()

    # Two pages per run: the first run continued after two pages, carrying where it was.
    last = history.events[-1]
    assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    payloads = last.workflow_execution_continued_as_new_event_attributes.input.payloads
    [carried] = pydantic_data_converter.payload_converter.from_payloads(payloads, [PollChannelOrdersInput])
    assert carried.cursor == cursor  # not moved mid-search
    assert carried.window is not None and carried.window.next_page == "4"
    # Of the four handled, those the next window's overlap can return (within 45 minutes of its end).
    assert set(carried.seen) == set(ids[1:4])
    # ... and the last run ended the search: every order once, the cursor at the window's end.
    assert sorted(channel.starts) == ids
    assert [page for _after, _before, page in channel.searches] == [None, "2", "4", "6"]
    assert result.cursor == channel.searches[0][1]
    assert sorted(result.started) == [f"order:amazon:{order_id}" for order_id in ids[4:]]
    assert set(result.seen) == set(ids[1:])


async def test_an_outage_of_the_channel_api_is_waited_out_and_no_order_is_missed(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    ids = [f"111-0000005-{n:07d}" for n in range(5)]
    for n, order_id in enumerate(ids):
        channel.add(order_id, now - timedelta(minutes=30 - n))
    # The first page is read, then the API is down for four tries of the second page.
    channel.fail_search_calls = {2, 3, 4, 5}

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1), page_size=2))

    assert channel.failed_searches == 4
    assert sorted(channel.starts) == ids
    assert [page for _after, _before, page in channel.searches] == [None, "2", "4"]
    assert result.cursor == channel.searches[0][1]


async def test_a_run_that_fails_leaves_the_cursor_where_it_was_for_the_next_run(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.add("111-0000006-0000001", now - timedelta(minutes=30))
    first = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))
    channel.add("111-0000006-0000002", now - timedelta(minutes=1))

    # A permanent failure of the search (credentials revoked, say) fails the run; its cursor is never stored.
    queue = f"poller-{uuid.uuid4()}"

    @activity.defn(name=ACTIVITY_LIST_CHANGES)
    async def refused(input: ListChannelOrderChangesInput) -> ChannelOrderChangePage:
        raise ApplicationError("channel HTTP 403: Unauthorized", type="AuthenticationError", non_retryable=True)

    async with Worker(time_skipping.client, task_queue=queue, workflows=[ChannelOrderPoller], activities=[refused]):
        try:
            await time_skipping.client.execute_workflow(
                ChannelOrderPoller.run, next_tick(first), id=f"poll-{uuid.uuid4()}", task_queue=queue
            )
        except WorkflowFailureError:
            pass
        else:
            raise AssertionError("the run should have failed")

    await time_skipping.sleep(timedelta(minutes=5))
    # The next tick starts from the last completed run's cursor, so the order updated meanwhile is found.
    third = await poll(time_skipping, channel, next_tick(first))
    assert sorted(third.started) == ["order:amazon:111-0000006-0000002"]
    assert sorted(channel.starts) == ["111-0000006-0000001", "111-0000006-0000002"]


async def test_cancellations_are_signalled_to_running_sagas_and_skipped_without_one(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.sagas = {"order:amazon:111-0000007-0000001", "order:amazon:111-0000007-0000002"}
    channel.add("111-0000007-0000001", now - timedelta(minutes=30), ChannelOrderStatus.CANCEL_REQUESTED)
    channel.add("111-0000007-0000002", now - timedelta(minutes=29), ChannelOrderStatus.CANCELLED)
    channel.add("111-0000007-0000003", now - timedelta(minutes=28), ChannelOrderStatus.CANCEL_REQUESTED)
    channel.add("111-0000007-0000004", now - timedelta(minutes=27), ChannelOrderStatus.OTHER)

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))

    assert sorted(channel.cancels) == ["111-0000007-0000001", "111-0000007-0000002"]
    assert sorted(result.cancels_signalled) == ["order:amazon:111-0000007-0000001", "order:amazon:111-0000007-0000002"]
    assert [(s.channel_order_id, s.reason) for s in result.skipped] == [
        ("111-0000007-0000003", "no saga running for this order")
    ]
    assert sorted(channel.starts) == []


async def test_orders_fulfilled_by_the_marketplace_are_skipped_with_the_reason(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.add("111-0000008-0000001", now - timedelta(minutes=30), fulfilled_by=FulfilledBy.MARKETPLACE)
    channel.add("111-0000008-0000002", now - timedelta(minutes=29))
    channel.add("111-0000008-0000003", now - timedelta(minutes=28))
    channel.afn_on_read = {"111-0000008-0000003"}

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))

    assert sorted(result.started) == ["order:amazon:111-0000008-0000002"]
    assert [(s.channel_order_id, s.reason) for s in result.skipped] == [
        ("111-0000008-0000001", "fulfilled by the marketplace"),
        ("111-0000008-0000003", "AFN order, fulfilled by Amazon"),
    ]
    assert sorted(channel.starts) == ["111-0000008-0000002"]


async def test_an_order_that_cannot_be_read_is_reported_and_the_others_still_start(
    time_skipping: WorkflowEnvironment,
) -> None:
    now = await time_skipping.get_current_time()
    channel = FakeChannel()
    channel.add("111-0000009-0000001", now - timedelta(minutes=30))
    channel.add("111-0000009-0000002", now - timedelta(minutes=29))
    channel.broken = {"111-0000009-0000001"}

    result = await poll(time_skipping, channel, poll_input(now - timedelta(hours=1)))

    assert sorted(result.started) == ["order:amazon:111-0000009-0000002"]
    assert [f.channel_order_id for f in result.failed] == ["111-0000009-0000001"]
    assert "ValidationRejectedError" in result.failed[0].reason
    assert "111-0000009-0000001" not in result.seen


@pytest.mark.parametrize(
    ("status", "fulfillment", "cancel_requested", "meaning", "fulfilled_by"),
    [
        ("UNSHIPPED", "MFN", False, ChannelOrderStatus.NEW, FulfilledBy.MERCHANT),
        ("Unshipped", "AFN", False, ChannelOrderStatus.NEW, FulfilledBy.MARKETPLACE),
        ("UNSHIPPED", "MFN", True, ChannelOrderStatus.CANCEL_REQUESTED, FulfilledBy.MERCHANT),
        ("PARTIALLY_SHIPPED", "MFN", True, ChannelOrderStatus.CANCEL_REQUESTED, FulfilledBy.MERCHANT),
        ("SHIPPED", "MFN", True, ChannelOrderStatus.OTHER, FulfilledBy.MERCHANT),
        ("CANCELLED", "MFN", False, ChannelOrderStatus.CANCELLED, FulfilledBy.MERCHANT),
        ("PENDING", "MFN", False, ChannelOrderStatus.OTHER, FulfilledBy.MERCHANT),
        ("PARTIALLY_SHIPPED", "MFN", False, ChannelOrderStatus.OTHER, FulfilledBy.MERCHANT),
    ],
)
def test_an_amazon_order_summary_maps_to_what_its_change_asks_of_orderflow(
    status: str, fulfillment: Any, cancel_requested: bool, meaning: ChannelOrderStatus, fulfilled_by: FulfilledBy
) -> None:
    at = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    summary = AmazonOrderSummary(
        amazon_order_id="111-0000010-0000001",
        status=status,
        fulfillment_channel=fulfillment,
        last_updated=at,
        cancellation_requested=cancel_requested,
    )
    assert change_of(summary) == ChannelOrderChange(
        channel_order_id="111-0000010-0000001", status=meaning, fulfilled_by=fulfilled_by, last_updated=at
    )


runner = CliRunner()


async def orderflow(client: Client, task_queue: str, *args: str) -> Any:
    """Run the CLI against this Temporal, off the event loop (it calls asyncio.run itself), as a process would."""
    env = {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "ORDERFLOW_TASK_QUEUE": task_queue,
    }
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def completed_polls(client: Client, schedule_id: str, count: int) -> list[PollResult]:
    """The results of the schedule's first `count` polls, waiting (real time) until they have all finished."""
    handle = client.get_schedule_handle(schedule_id)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        actions = [a.action for a in (await handle.describe()).info.recent_actions]
        runs = [a for a in actions if isinstance(a, ScheduleActionExecutionStartWorkflow)]
        if len(runs) >= count:
            return [
                await client.get_workflow_handle(
                    run.workflow_id, run_id=run.first_execution_run_id, result_type=PollResult
                ).result()
                for run in runs[:count]
            ]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"only {len(runs)} of {count} polls started")
        await asyncio.sleep(0.1)


async def test_a_schedule_made_by_the_cli_starts_each_poll_from_the_last_polls_cursor(
    dev_server: WorkflowEnvironment,
) -> None:
    client = dev_server.client
    marketplace = f"TEST{uuid.uuid4().hex[:10].upper()}"
    schedule_id = f"poll:amazon:{marketplace}"
    queue = f"poller-cli-{uuid.uuid4()}"
    now = datetime.now(UTC)
    channel = FakeChannel()
    channel.add("111-0000011-0000001", now - timedelta(minutes=30))
    async with Worker(
        client, task_queue=queue, workflows=[ChannelOrderPoller, ChannelOrderResync], activities=channel.activities()
    ):
        try:
            # Paused, so only the test's triggers poll; a trigger runs a paused schedule's action too.
            made = await orderflow(
                client, queue, "amazon", "schedule", "create", "--marketplace", marketplace, "--paused"
            )
            assert made.exit_code == 0, made.output
            again = await orderflow(client, queue, "amazon", "schedule", "create", "--marketplace", marketplace)
            assert again.exit_code == 0 and "already exists" in again.output

            assert (
                await orderflow(client, queue, "amazon", "schedule", "trigger", "--marketplace", marketplace)
            ).exit_code == 0
            [first] = await completed_polls(client, schedule_id, 1)
            assert first.started == ["order:amazon:111-0000011-0000001"]

            # A late write inside the overlap, and a second tick a second later (run ids carry the tick's second).
            channel.add("111-0000011-0000002", first.cursor - timedelta(minutes=1))
            await asyncio.sleep(1.1)
            assert (
                await orderflow(client, queue, "amazon", "schedule", "trigger", "--marketplace", marketplace)
            ).exit_code == 0
            _first, second = await completed_polls(client, schedule_id, 2)

            # The schedule's input has no cursor: the second poll took the first's result as its cursor.
            assert channel.searches[-1][0] == first.cursor - timedelta(minutes=10)
            assert second.started == ["order:amazon:111-0000011-0000002"]
            assert sorted(channel.starts) == ["111-0000011-0000001", "111-0000011-0000002"]

            described = await orderflow(client, queue, "amazon", "schedule", "describe", "--marketplace", marketplace)
            assert described.exit_code == 0, described.output
            assert f"{schedule_id}: paused" in described.output and second.cursor.isoformat() in described.output

            resynced = await orderflow(client, queue, "amazon", "resync", "111-0000011-0000002", "111-0000011-0000003")
            assert resynced.exit_code == 0, resynced.output
            assert "order:amazon:111-0000011-0000002: duplicate" in resynced.output
            assert "order:amazon:111-0000011-0000003: started" in resynced.output
        finally:
            with contextlib.suppress(RPCError):
                await client.get_schedule_handle(schedule_id).delete()

    missing = await orderflow(client, queue, "amazon", "schedule", "pause", "--marketplace", marketplace)
    assert missing.exit_code == 1 and "no schedule" in missing.output


@workflow.defn(name="OrderToCash")
class StandInOrderToCash:
    """A saga that only records the cancels it is sent: the poller's side of a saga is start and signal."""

    def __init__(self) -> None:
        self.received: list[CancelRequest] = []

    @workflow.run
    async def run(self, start: OrderToCashInput) -> None:
        """Wait until cancelled."""
        await workflow.wait_condition(lambda: bool(self.received))

    @workflow.signal(name=SIGNAL_CANCEL)
    def cancel(self, request: CancelRequest) -> None:
        """Record the cancel."""
        self.received.append(request)

    @workflow.query
    def cancels(self) -> list[CancelRequest]:
        """The cancels received."""
        return self.received


async def place_amazon_order(sandbox: Any, *, channel: str = "MFN", buyer_cancel_reason: str = "") -> dict[str, Any]:
    """A buyer's order on the sandbox Amazon for one unit of a well-stocked SKU, maybe with a cancel request."""
    sku = next(item.sku for item in seed.CATALOG if sum(item.stock.values()) >= 20)
    body: dict[str, Any] = {"fulfillment_channel": channel, "lines": [{"sku": sku, "quantity": 1}]}
    if buyer_cancel_reason:
        body["buyer_cancel_reason"] = buyer_cancel_reason
    response = await sandbox.post("/amazon/sandbox/orders", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.integration
async def test_the_poller_reads_the_sandbox_amazon_starts_the_new_order_and_signals_its_cancel(
    sandbox: Any, sandbox_url: str, http: Any
) -> None:
    # A Temporal of its own, whose clock is the sandbox's (real) one: the shared time-skipping server
    # has skipped years by now, and on the shared dev server other tests start the same sandbox order ids.
    env = await start_time_skipping_server()
    try:
        with env.auto_time_skipping_disabled():
            await poll_the_sandbox(env.client, sandbox, sandbox_url, http)
    finally:
        await env.shutdown()


async def poll_the_sandbox(client: Client, sandbox: Any, sandbox_url: str, http: Any) -> None:
    """Two polls of the sandbox Amazon: the first starts the merchant's order, the second signals its cancel."""
    queue = f"poller-amazon-{uuid.uuid4()}"
    amazon = AmazonClient(
        http,
        AmazonSettings(
            base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
        ),
    )
    polling = ChannelPollingActivities(amazon, client, task_queue=queue)
    merchant = await place_amazon_order(sandbox)
    by_amazon = await place_amazon_order(sandbox, channel="AFN")
    # Cancelled by its buyer before the poller ever saw it: it must still be cancelled on Amazon.
    regretted = await place_amazon_order(sandbox, buyer_cancel_reason="Ordered by mistake")
    placed = datetime.fromisoformat(merchant["createdTime"].replace("Z", "+00:00"))
    key = f"order:amazon:{merchant['orderId']}"
    regretted_key = f"order:amazon:{regretted['orderId']}"
    # Polls end on a whole second before now: an order stamped this second is the next tick's.
    await asyncio.sleep(1.1)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[ChannelOrderPoller, StandInOrderToCash],
        activities=[polling.list_channel_order_changes, polling.start_order_saga, polling.signal_cancel],
        # The stand-in saga lives in this test module, full of non-workflow imports.
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        try:
            first = await poll_on(client, queue, poll_input(placed - timedelta(minutes=1), search_lag=timedelta(0)))
            assert sorted(first.started) == sorted([key, regretted_key])
            # Started with the cancel already in it (signal-with-start), so its saga tells Amazon.
            assert first.cancels_signalled == [regretted_key]
            [early] = await client.get_workflow_handle(regretted_key).query(StandInOrderToCash.cancels)
            assert early.source is CancelSource.BUYER
            assert [(s.channel_order_id, s.reason) for s in first.skipped] == [
                (by_amazon["orderId"], "fulfilled by the marketplace")
            ]
            saga = await client.get_workflow_handle(key).describe()
            assert saga.workflow_type == "OrderToCash" and saga.status is WorkflowExecutionStatus.RUNNING

            cancelled = await sandbox.post(f"/amazon/sandbox/orders/{merchant['orderId']}/buyer-cancellation", json={})
            assert cancelled.status_code == 200, cancelled.text
            # The next tick comes later: the sandbox stamps updates with the real clock, to the second.
            await asyncio.sleep(1.1)
            second = await poll_on(client, queue, next_tick(first, search_lag=timedelta(0)))
            assert second.started == [] and second.cancels_signalled == [key]
            [request] = await client.get_workflow_handle(key).query(StandInOrderToCash.cancels)
            # Only asked: the order is still open on Amazon, so the saga must cancel it there.
            assert request.source is CancelSource.BUYER and request.reason == "the buyer asked the channel to cancel"
        finally:
            for started in (key, regretted_key):
                with contextlib.suppress(RPCError):
                    await client.get_workflow_handle(started).terminate("test over")


async def poll_on(client: Client, queue: str, input: PollChannelOrdersInput) -> PollResult:
    """Run one poll on a queue whose worker the test already runs."""
    return await client.execute_workflow(
        ChannelOrderPoller.run, input, id=f"poll:amazon:{MARKETPLACE}-{uuid.uuid4()}", task_queue=queue
    )
