"""`orderflow amazon ...`: the Amazon order poller's schedules, and pulling named orders on demand.

One Temporal Schedule per marketplace (`poll:amazon:{marketplace}`) starts the channel order
poller every 2 minutes by default; a tick while the last poll still runs (an outage being waited
out) is skipped, not queued. `resync` starts the sagas of named orders through a one-off workflow
on the worker, which holds the Amazon credentials; this command needs only Temporal.
Exit codes: 0 done, 1 no such schedule (or an order that could not be started), 2 Temporal or a
worker not reachable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, NoReturn

import typer
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from orderflow.canonical.channel_polling import (
    RESYNC_WORKFLOW_TYPE,
    WORKFLOW_TYPE,
    PollChannelOrdersInput,
    PollResult,
    ResyncChannelOrdersInput,
    ResyncChannelOrdersResult,
    poller_schedule_id,
)
from orderflow.canonical.order import Channel, order_key
from orderflow.cli.connection import (
    DEFAULT_ADDRESS,
    DEFAULT_NAMESPACE,
    TASK_QUEUE,
    AddressOption,
    NamespaceOption,
    TaskQueueOption,
    connect_or_exit,
    fail,
)
from orderflow.settings import get_settings

app = typer.Typer(help="Amazon: the order poller's schedules (one per marketplace), and pulling orders on demand.")
schedule_app = typer.Typer(help="The poller's Temporal Schedules: create, pause, unpause, trigger, describe.")
app.add_typer(schedule_app, name="schedule")

MarketplaceOption = Annotated[
    list[str] | None,
    typer.Option("--marketplace", help="Marketplace id; repeat for several. Default: those in the settings."),
]
NoteOption = Annotated[str, typer.Option("--note", help="Why; shown with the schedule.")]
# Amazon wants a search to end at least 2 minutes before now; the sandbox has no such rule, so the
# local stack's searches end at the last whole second and its orders show up at the next poll
# (one stamped later in that second is found by the next poll's look-back overlap).
AMAZON_SEARCH_LAG = timedelta(minutes=2)
SANDBOX_SEARCH_LAG = timedelta(0)


def _marketplaces(given: list[str] | None) -> list[str]:
    return list(given) if given else list(get_settings().amazon.marketplace_ids)


def _schedule_failure(exc: RPCError, schedule_id: str, address: str) -> NoReturn:
    if exc.status is RPCStatusCode.NOT_FOUND:
        fail(f"no schedule {schedule_id}; create it with `orderflow amazon schedule create`", 1)
    fail(f"Temporal at {address} refused the request for {schedule_id} ({exc.status.name}): {exc.message}", 2)


def poller_schedule(
    marketplace: str,
    *,
    every: timedelta,
    overlap: timedelta,
    task_queue: str,
    paused: bool,
    search_lag: timedelta = AMAZON_SEARCH_LAG,
    schedule_id: str | None = None,
) -> Schedule:
    """The schedule that polls one marketplace every `every`, skipping ticks while a poll still runs."""
    schedule_id = schedule_id or poller_schedule_id(Channel.AMAZON, marketplace)
    start = PollChannelOrdersInput(
        channel=Channel.AMAZON, account_id=marketplace, overlap=overlap, search_lag=search_lag
    )
    return Schedule(
        # Each run's id is the schedule id plus its tick time; its result is the next run's cursor.
        action=ScheduleActionStartWorkflow(WORKFLOW_TYPE, start, id=schedule_id, task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note="created paused" if paused else None),
    )


@schedule_app.command("create")
def create(
    marketplace: MarketplaceOption = None,
    every: Annotated[float, typer.Option("--every", min=0.5, help="Minutes between polls.")] = 2.0,
    overlap: Annotated[float, typer.Option("--overlap", min=0, help="Look-back overlap, minutes.")] = 10.0,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    search_lag: Annotated[
        float,
        typer.Option("--search-lag", min=0, help="Seconds before now a search must end (Amazon: 120; the sandbox: 0)."),
    ] = AMAZON_SEARCH_LAG.total_seconds(),
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Create the poller's schedule for each marketplace; one that exists already is left as it is."""

    async def run() -> None:
        client = await connect_or_exit(address, namespace)
        for account in _marketplaces(marketplace):
            schedule_id = poller_schedule_id(Channel.AMAZON, account)
            schedule = poller_schedule(
                account,
                every=timedelta(minutes=every),
                overlap=timedelta(minutes=overlap),
                task_queue=task_queue,
                paused=paused,
                search_lag=timedelta(seconds=search_lag),
            )
            try:
                created = await ensure_schedule(client, schedule_id, schedule)
            except RPCError as exc:
                _schedule_failure(exc, schedule_id, address)
            if created:
                typer.echo(f"{schedule_id}: created, every {every:g} min, {'paused' if paused else 'running'}")
            else:
                typer.echo(f"{schedule_id}: already exists, left as it is")

    asyncio.run(run())


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> bool:
    """Create the schedule unless it exists (then it is left as it is); True when it was created."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        return False
    return True


async def _each_schedule(
    marketplaces: list[str], address: str, namespace: str
) -> tuple[Client, list[tuple[str, ScheduleHandle]]]:
    client = await connect_or_exit(address, namespace)
    ids = [poller_schedule_id(Channel.AMAZON, m) for m in marketplaces]
    return client, [(schedule_id, client.get_schedule_handle(schedule_id)) for schedule_id in ids]


def _act_on_each_schedule(
    marketplace: list[str] | None,
    address: str,
    namespace: str,
    action: Callable[[ScheduleHandle], Awaitable[None]],
    done: str,
) -> None:
    """Apply one action to every chosen marketplace's schedule, saying `done` for each (exit 1/2 on failure)."""

    async def run() -> None:
        _client, handles = await _each_schedule(_marketplaces(marketplace), address, namespace)
        for schedule_id, handle in handles:
            try:
                await action(handle)
            except RPCError as exc:
                _schedule_failure(exc, schedule_id, address)
            typer.echo(f"{schedule_id}: {done}")

    asyncio.run(run())


@schedule_app.command("pause")
def pause(
    marketplace: MarketplaceOption = None,
    note: NoteOption = "paused from the orderflow CLI",
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Stop polling a marketplace; the cursor is kept, so unpausing misses nothing."""
    _act_on_each_schedule(marketplace, address, namespace, lambda handle: handle.pause(note=note), "paused")


@schedule_app.command("unpause")
def unpause(
    marketplace: MarketplaceOption = None,
    note: NoteOption = "unpaused from the orderflow CLI",
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Resume polling a marketplace from where its last poll ended."""
    _act_on_each_schedule(marketplace, address, namespace, lambda handle: handle.unpause(note=note), "running")


@schedule_app.command("trigger")
def trigger(
    marketplace: MarketplaceOption = None,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Poll a marketplace now (skipped if a poll is still running)."""
    _act_on_each_schedule(marketplace, address, namespace, lambda handle: handle.trigger(), "triggered")


@schedule_app.command("describe")
def describe(
    marketplace: MarketplaceOption = None,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Show each schedule: paused or not, next polls, and the last poll's outcome and cursor."""

    async def run() -> None:
        client, handles = await _each_schedule(_marketplaces(marketplace), address, namespace)
        for schedule_id, handle in handles:
            try:
                description = await handle.describe()
            except RPCError as exc:
                _schedule_failure(exc, schedule_id, address)
            state = description.schedule.state
            typer.echo(
                f"{schedule_id}: {'paused' if state.paused else 'running'}" + (f" ({state.note})" if state.note else "")
            )
            for at in description.info.next_action_times[:3]:
                typer.echo(f"  next poll at {at.isoformat()}")
            typer.echo(f"  polls running: {len(description.info.running_actions)}")
            if description.info.recent_actions:
                await _describe_last_poll(client, description.info.recent_actions[-1].action)

    asyncio.run(run())


async def _describe_last_poll(client: Client, action: ScheduleActionExecution) -> None:
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return
    workflow_id = action.workflow_id
    handle = client.get_workflow_handle(workflow_id, run_id=action.first_execution_run_id, result_type=PollResult)
    run = await handle.describe()
    status = run.status.name if run.status else "UNKNOWN"
    typer.echo(f"  last poll {workflow_id}: {status}")
    if run.status is WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        typer.echo(
            f"  cursor {result.cursor.isoformat()}: {len(result.started)} started, "
            f"{len(result.cancels_signalled)} cancels, {len(result.skipped)} skipped, {len(result.failed)} failed"
        )


@app.command("resync")
def resync(
    order_ids: Annotated[list[str], typer.Argument(help="Amazon order ids (e.g. 111-1234567-1234567).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the worker.")] = 120.0,
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Pull named Amazon orders now and start the saga of each not yet started (a duplicate is fine)."""
    asyncio.run(_resync(order_ids, answer_within=timeout, task_queue=task_queue, address=address, namespace=namespace))


async def _resync(order_ids: list[str], *, answer_within: float, task_queue: str, address: str, namespace: str) -> None:
    client = await connect_or_exit(address, namespace)
    workflow_id = f"resync:{Channel.AMAZON.value}:{uuid.uuid4()}"
    try:
        handle = await client.start_workflow(
            RESYNC_WORKFLOW_TYPE,
            ResyncChannelOrdersInput(channel=Channel.AMAZON, channel_order_ids=order_ids),
            id=workflow_id,
            task_queue=task_queue,
            result_type=ResyncChannelOrdersResult,
        )
        async with asyncio.timeout(answer_within):
            result = await handle.result()
    except TimeoutError:
        fail(
            f"no worker finished {workflow_id} within {answer_within:g} s; is a worker up? (it goes on when one is)", 2
        )
    except RPCError as exc:
        fail(f"Temporal at {address} refused {workflow_id} ({exc.status.name}): {exc.message}", 2)
    for outcome in result.outcomes:
        typer.echo(f"{outcome.order_key}: {outcome.outcome.value}" + (f" ({outcome.reason})" if outcome.reason else ""))
    for failure in result.failed:
        typer.secho(
            f"{order_key(Channel.AMAZON, failure.channel_order_id)}: failed ({failure.reason})",
            err=True,
            fg=typer.colors.RED,
        )
    if result.failed:
        raise typer.Exit(1)
