"""`orderflow amazon ...`: the Amazon order poller's schedules, and pulling named orders on demand.

One Temporal Schedule per marketplace (`poll:amazon:{marketplace}`) starts the channel order
poller every 2 minutes by default; a tick while the last poll still runs (an outage being waited
out) is skipped, not queued. `resync` starts the sagas of named orders through a one-off workflow
on the worker, which holds the Amazon credentials; this command needs only Temporal.
Exit codes: 0 done, 1 no such schedule (or an order that could not be started), 2 Temporal or a
worker not reachable.

`feeds` settles Amazon feed submissions left in doubt (a refund parked with `FeedSubmissionUnknown`)
in the feed ledger, orderflow's database; it needs neither Temporal nor Amazon. Exit codes: 0 done,
1 refused (no such key, a key with its feed already, an attempt still at work, not confirmed), 2 bad
input or the database not reachable or not migrated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn, TypeVar

import httpx
import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
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

from orderflow.adapters.amazon import ADJUSTMENT_FEED, AmazonClient, FeedEntry
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
from orderflow.canonical.return_saga import return_key_from_reference
from orderflow.canonical.saga import order_key_from_reference
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
from orderflow.settings import database_url, get_settings
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.store.feed_ledger import AmazonFeedLedger

app = typer.Typer(
    help="Amazon: the order poller's schedules (one per marketplace), pulling orders on demand, and feeds in doubt."
)
schedule_app = typer.Typer(help="The poller's Temporal Schedules: create, pause, unpause, trigger, describe.")
app.add_typer(schedule_app, name="schedule")
feeds_app = typer.Typer(
    help="Feed submissions in doubt (a refund parked with FeedSubmissionUnknown): list, settle, release."
)
app.add_typer(feeds_app, name="feeds")

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


# ---- feeds in doubt ---------------------------------------------------------------------------------------

T = TypeVar("T")
# The ledger's column; a longer id is a typo, refused before it reaches the database.
MAX_FEED_ID = 64

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        "--url",
        help="The feed ledger's database (default: ORDERFLOW_DATABASE_URL, else SQLite in .orderflow/).",
    ),
]
FeedKeyArgument = Annotated[
    str,
    typer.Argument(metavar="KEY", help="The submission's idempotency key, as `feeds list` shows it."),
]


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the URL given"


def _with_ledger(url: str | None, action: Callable[[AmazonFeedLedger], Awaitable[T]]) -> T:
    """Open the database, refuse it unless migrated, and run one action on its feed ledger (exit 2 if it can't)."""
    target = url or database_url(get_settings())

    async def run() -> T:
        database = Database(target)
        try:
            await database.require_migrated()
            return await action(AmazonFeedLedger(database))
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except DatabaseNotMigratedError as exc:
        fail(str(exc), 2)
    except (SQLAlchemyError, OSError) as exc:
        # The class name only: a driver's message can carry connection details.
        fail(f"cannot use the feed ledger in {_shown(target)} ({exc.__class__.__name__})", 2)


async def _submission_window() -> timedelta:
    # The window is the adapter's own, worked out from the Amazon settings the worker runs with;
    # the client is built only to ask it and makes no call.
    async with httpx.AsyncClient() as http:
        return AmazonClient(http, get_settings().amazon).submission_window


def _age(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def next_step(key: str, *, feed_id: str | None) -> str:
    """The command that lets the saga behind a feed key go on, told by the key's shape."""
    # Keys are `OFR-{channel}-{return id}-{step}` (a return) or `OF-{channel}-{order id}-{step}`
    # (an order); step names hold no `-`, Amazon order ids do, so the step is after the last `-`.
    reference, _, step = key.rpartition("-")
    returned = return_key_from_reference(reference)
    if returned is not None and step == "refund":
        then = f"checks feed {feed_id}'s processing report" if feed_id else "submits the refund feed again"
        return f"next: `orderflow returns retry {returned}` (its refund step {then})"
    order = order_key_from_reference(reference)
    if order is not None:
        # A cancel in doubt is sent again by the saga itself (a second acknowledgement is harmless).
        return (
            f"next: the order's next cancel attempt goes on by itself; `orderflow orders status {order}` "
            f"shows it, and `orderflow orders retry {order}` moves it on if it is parked"
        )
    return "next: retry the parked step that submits this feed (the key names neither a return nor an order)"


def _print_columns(header: list[str], rows: list[list[str]]) -> None:
    # Plain aligned columns, never cut: the key and document id are copied into commands and Seller
    # Central whole, and a line per submission stays greppable (a narrow terminal wraps, not truncates).
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _state(entry: FeedEntry, *, now: datetime, window: timedelta) -> str:
    if entry.feed_id is not None:
        return f"feed {entry.feed_id}"
    return "IN DOUBT" if now - entry.recorded_at >= window else "submitting"


@feeds_app.command("list")
def feeds_list(
    all_rows: Annotated[
        bool, typer.Option("--all", help="The latest submissions of every state, not only those in doubt.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="With --all: at most this many, newest first.")] = 50,
    url: DatabaseUrlOption = None,
) -> None:
    """List the feed submissions in doubt: a document recorded, no feed id, older than an attempt can take."""
    window = asyncio.run(_submission_window())
    now = datetime.now(UTC)
    if all_rows:
        entries = _with_ledger(url, lambda ledger: ledger.recent(limit))
    else:
        entries = _with_ledger(url, lambda ledger: ledger.in_doubt(recorded_before=now - window))
    in_doubt = [e for e in entries if _state(e, now=now, window=window) == "IN DOUBT"]
    if not entries:
        typer.echo("no feed submissions" if all_rows else "no feed submissions in doubt")
        return
    typer.echo(
        f"{len(entries)} latest feed submission(s)" if all_rows else f"{len(entries)} feed submission(s) in doubt"
    )
    header = ["key", "feed type", "Amazon order", "document id", "recorded (UTC)", "age"] + (
        ["state"] if all_rows else []
    )
    rows = [
        [
            entry.key,
            entry.feed_type,
            entry.amazon_order_id or "-",
            entry.document_id,
            entry.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            _age(now - entry.recorded_at),
        ]
        + ([_state(entry, now=now, window=window)] if all_rows else [])
        for entry in entries
    ]
    _print_columns(header, rows)
    if in_doubt:
        typer.echo(
            f"in doubt: the feed document was recorded over {_age(window)} ago and createFeed's answer never was. "
            "Look each one up in Seller Central's feed upload history (or getFeeds) by feed type and time, then "
            "`orderflow amazon feeds settle KEY --feed-id ID` if Amazon has it, or "
            "`orderflow amazon feeds release KEY` if it has none."
        )
        if any(entry.feed_type != ADJUSTMENT_FEED for entry in in_doubt):
            typer.echo("a cancel's acknowledgement feed in doubt needs neither: its next attempt sends it again.")


@dataclass(frozen=True)
class _Refusal:
    """Why a feed submission was left as it is."""

    message: str


async def _settleable(ledger: AmazonFeedLedger, key: str, window: timedelta) -> FeedEntry | _Refusal:
    """The submission under `key` if it is in doubt, else why an operator may not settle or release it."""
    entry = await ledger.find(key)
    if entry is None:
        return _Refusal(f"no feed submission under {key}; `orderflow amazon feeds list --all` shows the keys")
    if entry.feed_id is not None:
        return _Refusal(f"{key} already has feed {entry.feed_id}; it is not in doubt, nothing to do")
    age = datetime.now(UTC) - entry.recorded_at
    if age < window:
        # The attempt that recorded it may still be waiting for createFeed's answer: acting now
        # could hide its feed, or free the key under it and submit the refund twice.
        return _Refusal(
            f"{key} was recorded {_age(age)} ago and an attempt may still be submitting it; it is in doubt "
            f"only after {_age(window)}: list again then"
        )
    return entry


def _refused(refusal: _Refusal) -> NoReturn:
    fail(f"refused: {refusal.message}", 1)


@feeds_app.command("settle")
def feeds_settle(
    key: FeedKeyArgument,
    feed_id: Annotated[
        str, typer.Option("--feed-id", help="The feed Amazon has for it (Seller Central's upload history, getFeeds).")
    ],
    url: DatabaseUrlOption = None,
) -> None:
    """Record the feed a submission in doubt made, so the parked step's retry checks it instead of parking."""
    feed_id = feed_id.strip()
    if not feed_id or len(feed_id) > MAX_FEED_ID:
        fail(f"--feed-id must be Amazon's feed id (1 to {MAX_FEED_ID} characters)", 2)
    window = asyncio.run(_submission_window())

    async def settle(ledger: AmazonFeedLedger) -> FeedEntry | _Refusal:
        found = await _settleable(ledger, key, window)
        if isinstance(found, _Refusal):
            return found
        if not await ledger.settle(key, feed_id=feed_id):
            return _Refusal(f"{key} changed while settling it; `orderflow amazon feeds list --all` shows it now")
        return found

    outcome = _with_ledger(url, settle)
    if isinstance(outcome, _Refusal):
        _refused(outcome)
    typer.echo(
        f"settled {key}: {outcome.feed_type} for Amazon order {outcome.amazon_order_id or '-'} is feed {feed_id}"
    )
    typer.echo(next_step(key, feed_id=feed_id))


def _release_warning(entry: FeedEntry) -> str:
    if entry.feed_type == ADJUSTMENT_FEED:
        return (
            f"If Amazon did receive document {entry.document_id}, releasing it submits the refund again "
            f"and the buyer of Amazon order {entry.amazon_order_id or '-'} is refunded TWICE. "
            "Release only after Seller Central's feed upload history shows no such feed."
        )
    return f"The next attempt submits a new {entry.feed_type} feed for Amazon order {entry.amazon_order_id or '-'}."


@feeds_app.command("release")
def feeds_release(
    key: FeedKeyArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: DatabaseUrlOption = None,
) -> None:
    """Free the key of a submission Amazon never received, so the parked step's retry submits it again."""
    window = asyncio.run(_submission_window())
    found = _with_ledger(url, lambda ledger: _settleable(ledger, key, window))
    if isinstance(found, _Refusal):
        _refused(found)
    if not yes:
        typer.echo(_release_warning(found))
        if not typer.confirm(f"Release {key}?", default=False):
            fail(f"nothing released; {key} is still in doubt", 1)

    async def release(ledger: AmazonFeedLedger) -> FeedEntry | None:
        # Only the document looked at goes, and only while it has no feed id (the ledger's guard).
        await ledger.release(key, document_id=found.document_id)
        return await ledger.find(key)

    left = _with_ledger(url, release)
    if left is not None and left.document_id == found.document_id:
        # Its attempt recorded a feed after all, between the look and the release.
        _refused(_Refusal(f"{key} has feed {left.feed_id} now; nothing released"))
    typer.echo(f"released {key}: document {found.document_id} is dropped, the key is free to submit again")
    if left is not None:
        typer.echo(f"(a new attempt has already claimed it with document {left.document_id})")
    typer.echo(next_step(key, feed_id=None))
