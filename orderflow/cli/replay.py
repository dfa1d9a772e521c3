"""`orderflow replay`: replay saga histories against the current workflow code, before it is deployed.

A change to a workflow that running sagas cannot replay (a step moved, an activity renamed without
`workflow.patched`) makes every one of them fail its next workflow task once the new worker takes
over. This command finds that first: it replays histories, from a namespace's visibility
(`--from-namespace`, e.g. production's) or from `temporal workflow show --output json` files, through
the same workflow classes and the same data converter (payload codec from settings) as the worker.

One line per history (`ok`, `NONDETERMINISTIC` or `FAILED` with the error), then a summary. Exit
codes: 0 every history replayed, 1 some did not (the first error is printed in full), 2 bad
arguments, unreadable files, or Temporal not reachable.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError
from temporalio.worker import Replayer, WorkflowReplayResult

from orderflow.cli.connection import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, AddressOption, NamespaceOption, connect_or_exit
from orderflow.cli.connection import fail as _fail
from orderflow.worker import WORKFLOWS  # the worker's own list: what runs is what replays

app = typer.Typer(help="Replay saga histories against the current workflow code; fail on nondeterminism.")

__all__ = ["WORKFLOWS", "ReplayReport", "app", "replay", "replay_histories", "workflow_type_names"]


def workflow_type_names(workflows: Sequence[type] = WORKFLOWS) -> list[str]:
    """The Temporal workflow type names of the sagas (what visibility's WorkflowType holds)."""
    # The SDK keeps the @workflow.defn name only on its definition object; there is no public accessor.
    # A None name would be a dynamic workflow; orderflow's sagas all name themselves.
    return [workflow._Definition.must_from_class(cls).name or cls.__name__ for cls in workflows]


@dataclass
class ReplayReport:
    """What a replay found: how many histories replayed and the ones the current code could not."""

    replayed: int = 0
    failures: list[WorkflowReplayResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every history replayed without a failure."""
        return not self.failures


def _workflow_type(history: WorkflowHistory) -> str:
    if history.events and history.events[0].HasField("workflow_execution_started_event_attributes"):
        return history.events[0].workflow_execution_started_event_attributes.workflow_type.name
    return "?"


def _verdict(failure: BaseException) -> str:
    return "NONDETERMINISTIC" if isinstance(failure, workflow.NondeterminismError) else "FAILED"


# Core's activation failure wraps the readable message in a Rust debug dump; the line shows the message only.
_CORE_MESSAGE = re.compile(r'message: "(.*?)", source:')


def _first_line(failure: BaseException) -> str:
    text = str(failure).strip()
    core = _CORE_MESSAGE.search(text)
    if core:
        return core.group(1)
    lines = text.splitlines()
    return lines[0] if lines else type(failure).__name__


async def replay_histories(
    histories: AsyncIterator[WorkflowHistory], *, data_converter: DataConverter, namespace: str = DEFAULT_NAMESPACE
) -> ReplayReport:
    """Replay every history against the current sagas, echoing a line per history as it is done."""
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=data_converter, namespace=namespace)
    report = ReplayReport()
    async with replayer.workflow_replay_iterator(histories) as results:
        async for result in results:
            report.replayed += 1
            history = result.history
            where = f"{_workflow_type(history):<20} {history.workflow_id}  run {_run_id(history)}"
            if result.replay_failure is None:
                typer.echo(f"ok                {where}")
            else:
                report.failures.append(result)
                failure = result.replay_failure
                typer.secho(f"{_verdict(failure):<17} {where}: {_first_line(failure)}", fg=typer.colors.RED)
    return report


def _run_id(history: WorkflowHistory) -> str:
    try:
        return history.run_id
    except RuntimeError:
        return "?"


def _summarise(report: ReplayReport, source: str) -> None:
    if report.replayed == 0:
        typer.echo(f"no histories to replay from {source}")
        return
    if report.ok:
        typer.secho(f"all {report.replayed} histories from {source} replayed", fg=typer.colors.GREEN)
        return
    failed = len(report.failures)
    first = report.failures[0]
    failure = first.replay_failure
    assert failure is not None  # only failed results are kept
    nondeterministic = sum(1 for r in report.failures if isinstance(r.replay_failure, workflow.NondeterminismError))
    # Loud on purpose: this gates a deploy, and the first error in full is what the developer needs.
    typer.secho(
        f"{failed} of {report.replayed} histories from {source} did not replay "
        f"({nondeterministic} nondeterministic). Do not deploy this workflow code: running sagas would fail.\n"
        f"First failure, {_workflow_type(first.history)} {first.history.workflow_id} run {_run_id(first.history)}:\n"
        f"{type(failure).__name__}: {failure}" + _advice(report, nondeterministic=nondeterministic),
        err=True,
        fg=typer.colors.RED,
        bold=True,
    )


def _advice(report: ReplayReport, *, nondeterministic: int) -> str:
    if nondeterministic:
        return "\nGuard the change with workflow.patched(...) (see docs/operations.md), or keep the old code path."
    if any("decod" in str(r.replay_failure).lower() for r in report.failures):
        # An encrypted history read without its key fails on the saga's input, before any step runs.
        return (
            "\nPayloads did not decode: give this command the payload keys the worker has "
            "(ORDERFLOW_CODEC__KEY, ORDERFLOW_CODEC__OLD_KEYS or their _FILE forms)."
        )
    return ""


def _data_converter_from_settings() -> DataConverter:
    """The worker's data converter: pydantic models, and the payload codec when settings configure keys."""
    from orderflow.codec import codec_from_settings
    from orderflow.settings import get_settings
    from orderflow.temporal import data_converter

    try:
        return data_converter(codec_from_settings(get_settings().codec))
    except ValueError as exc:
        # A key that cannot be used; the message names the setting, never the key.
        _fail(f"the payload encryption settings are not usable: {exc}", 2)


def _load_files(files: Sequence[Path], types: Sequence[str]) -> list[WorkflowHistory]:
    histories = []
    for path in files:
        try:
            history = WorkflowHistory.from_json(path.stem, path.read_text())
        except OSError as exc:
            _fail(f"cannot read {path}: {exc.strerror or exc}", 2)
        except (ValueError, KeyError, TypeError) as exc:
            _fail(f"{path} is not a workflow history (`temporal workflow show --output json`): {exc}", 2)
        if not history.events:
            _fail(f"{path} holds no history events", 2)
        if not types or _workflow_type(history) in types:
            histories.append(history)
    return histories


async def _iterate(histories: Sequence[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for history in histories:
        yield history


def namespace_query(query: str | None, types: Sequence[str]) -> str:
    """The visibility query for the sagas to replay: the operator's, narrowed to orderflow's workflow types."""
    quoted = ", ".join(f"'{name}'" for name in types)
    narrowed = f"WorkflowType IN ({quoted})"
    return f"({query}) AND {narrowed}" if query else narrowed


async def _from_namespace(
    *, address: str, namespace: str, query: str | None, limit: int | None, types: Sequence[str]
) -> tuple[ReplayReport, str]:
    client: Client = await connect_or_exit(address, namespace)
    visibility = namespace_query(query, types)
    typer.echo(f"replaying {visibility} in namespace {namespace} at {address}")
    try:
        # Histories are fetched one execution at a time as the replayer asks, so a large namespace streams.
        histories = client.list_workflows(visibility, limit=limit).map_histories()
        report = await replay_histories(histories, data_converter=client.data_converter, namespace=namespace)
    except RPCError as exc:
        # A query visibility cannot run (an unknown attribute, bad syntax), or a namespace that is not there.
        _fail(f"Temporal refused to list the workflows of namespace {namespace}: {exc}", 2)
    except RuntimeError as exc:
        # The SDK's bridge reports a connection lost mid-way as a bare RuntimeError.
        _fail(f"lost the connection to Temporal at {address} while fetching histories: {exc}", 2)
    return report, f"namespace {namespace}"


def replay(
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="History JSON files (`temporal workflow show --output json`).", show_default=False),
    ] = None,
    from_namespace: Annotated[
        bool, typer.Option("--from-namespace", help="Replay the histories visibility lists in the namespace.")
    ] = False,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", help="Visibility query, e.g. \"StartTime > '2026-11-01T00:00:00Z'\" (with --from-namespace)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many workflows (with --from-namespace).")
    ] = None,
    workflow_types: Annotated[
        list[str] | None,
        typer.Option("--workflow-type", help="Only this workflow type (repeatable); default: every orderflow saga."),
    ] = None,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Replay saga histories against the current workflow code and fail on any nondeterminism."""
    known = workflow_type_names()
    unknown = sorted(set(workflow_types or ()) - set(known))
    if unknown:
        _fail(f"unknown workflow type(s) {', '.join(unknown)}; the sagas are {', '.join(known)}", 2)
    if from_namespace == bool(files):
        _fail("give either history FILEs or --from-namespace (one of them)", 2)
    if files and (query is not None or limit is not None):
        _fail("--query and --limit select from a namespace; use them with --from-namespace", 2)
    types = workflow_types or known
    if from_namespace:
        report, source = asyncio.run(
            _from_namespace(address=address, namespace=namespace, query=query, limit=limit, types=types)
        )
    else:
        # Files are replayed whatever their type unless asked otherwise: a saga type the code no longer
        # has is a failure worth seeing, not one to skip.
        histories = _load_files(files or [], workflow_types or ())
        converter = _data_converter_from_settings()
        report = asyncio.run(replay_histories(_iterate(histories), data_converter=converter))
        source = f"{len(files or [])} file(s)"
    _summarise(report, source)
    if not report.ok:
        raise typer.Exit(1)


app.command("replay")(replay)
