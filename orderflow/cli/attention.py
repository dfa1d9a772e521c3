"""`orderflow attention ...`: the exception workbench, every parked saga with why, since when, and what fixes it.

It asks Temporal's visibility for `NeedsAttention = true AND ExecutionStatus = 'Running'` (the same
query the Temporal UI's saved view runs), then each saga's `status` query for the reason and the
step, and the saga's history for the failure that parked it: the system named in the failure's
details (activities put it there, see activities/failures.py) and when it failed. Orders, returns
and channel refunds are listed together; each row shows the commands that apply to it.

`attention retry --all` retries, in bulk, every parked saga that matches (by reason, step, kind)
after a data fix, through the same updates `orders retry` and `returns retry` send. Exit codes:
0 done (or nothing to do), 1 some saga refused (or was not there), 2 bad input or Temporal not
reachable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecution, WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from orderflow.canonical.channel_refund import WORKFLOW_TYPE as REFUND_WORKFLOW
from orderflow.canonical.channel_refund import ChannelRefundState
from orderflow.canonical.return_saga import UPDATE_RETRY as RETURN_UPDATE_RETRY
from orderflow.canonical.return_saga import UPDATE_SKIP as RETURN_UPDATE_SKIP
from orderflow.canonical.return_saga import WORKFLOW_TYPE as RETURN_WORKFLOW
from orderflow.canonical.return_saga import ReturnCompensationStep, ReturnSagaState, ReturnStatus, ReturnStep
from orderflow.canonical.saga import (
    OPERATOR_RECORD,
    QUERY_STATUS,
    SIGNAL_RETRY,
    SIGNAL_SKIP,
    UPDATE_RETRY,
    UPDATE_SKIP,
    CompensationStep,
    OperatorCommand,
    OrderSagaState,
    OrderStatus,
    SagaStep,
)
from orderflow.cli.connection import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, AddressOption, NamespaceOption, connect_or_exit
from orderflow.cli.connection import fail as _fail
from orderflow.cli.saga_actions import ActionAnswer, attempt, operator_name, rpc_reason
from orderflow.temporal import NEEDS_ATTENTION

app = typer.Typer(help="The exception workbench: every parked saga, why, since when, and the command that fixes it.")

ORDER_WORKFLOW = "OrderToCash"
# The Temporal UI's saved view runs the same query (docs/operations.md, "The exception workbench").
ATTENTION_QUERY = f"{NEEDS_ATTENTION.name} = true AND ExecutionStatus = 'Running'"
# How far back in a saga's history to look for the failure that parked it, newest event first.
HISTORY_EVENTS_SCANNED = 1000
HISTORY_PAGE = 200
# Sagas examined at once: each is one query and one or two history pages.
CONCURRENCY = 8


class Kind(StrEnum):
    """What kind of saga is parked."""

    ORDER = "order"
    RETURN = "return"
    REFUND = "refund"


KIND_OF_WORKFLOW = {ORDER_WORKFLOW: Kind.ORDER, RETURN_WORKFLOW: Kind.RETURN, REFUND_WORKFLOW: Kind.REFUND}

# When the failure does not name its system (or was not found), the step says which system it calls.
ERP, WMS, CARRIER, CHANNEL = "netsuite", "wms", "carrier", "channel"
ORDER_STEP_SYSTEMS: dict[str, str] = {
    SagaStep.ACCEPT: ERP,
    SagaStep.CREDIT_CHECK: ERP,
    SagaStep.ALLOCATE: WMS,
    SagaStep.POST_TO_ERP: ERP,
    SagaStep.BUY_LABEL: CARRIER,
    SagaStep.RELEASE: WMS,
    SagaStep.AWAIT_SHIPMENT: WMS,
    SagaStep.INVOICE: ERP,
    CompensationStep.RELEASE_ALLOCATION: WMS,
    CompensationStep.CLOSE_SALES_ORDER: ERP,
    CompensationStep.VOID_LABEL: CARRIER,
    CompensationStep.CANCEL_FULFILLMENT_ORDER: WMS,
    CompensationStep.CANCEL_ON_CHANNEL: CHANNEL,
}
RETURN_STEP_SYSTEMS: dict[str, str] = {
    ReturnStep.APPROVE_ON_CHANNEL: CHANNEL,
    ReturnStep.AUTHORIZE: ERP,
    ReturnStep.BUY_LABEL: CARRIER,
    ReturnStep.SEND_LABEL: CHANNEL,
    ReturnStep.CREATE_WMS_RETURN: WMS,
    ReturnStep.RESTOCK: WMS,
    ReturnStep.RECEIVE_IN_ERP: ERP,
    ReturnStep.CREDIT: ERP,
    ReturnStep.REFUND: CHANNEL,
    ReturnStep.DECLINE_ON_CHANNEL: CHANNEL,
    ReturnCompensationStep.CANCEL_WMS_RETURN: WMS,
    ReturnCompensationStep.VOID_RETURN_LABEL: CARRIER,
    ReturnCompensationStep.CLOSE_RETURN_AUTHORIZATION: ERP,
    ReturnCompensationStep.CANCEL_ON_CHANNEL: CHANNEL,
}

# Steps the sagas let an operator skip (each saga's validator has the last word): what a person can
# do by hand, and every undo.
ORDER_SKIPPABLE = frozenset(
    {SagaStep.BUY_LABEL, SagaStep.CONFIRM, SagaStep.INVOICE, SagaStep.CANCEL_UNSHIPPED, *CompensationStep}
)
RETURN_SKIPPABLE = frozenset(
    {ReturnStep.APPROVE_ON_CHANNEL, ReturnStep.BUY_LABEL, ReturnStep.SEND_LABEL, ReturnStep.RESTOCK,
     ReturnStep.CLOSE, ReturnStep.DECLINE_ON_CHANNEL, *ReturnCompensationStep}
)  # fmt: skip
ORDER_NOT_CANCELLABLE = frozenset(
    {OrderStatus.SHIPPED, OrderStatus.FULFILLED, OrderStatus.COMPLETED, OrderStatus.CANCELLING, OrderStatus.CANCELLED}
)
RETURN_NOT_CANCELLABLE = frozenset(
    {ReturnStatus.COMPLETED, ReturnStatus.REFUSED, ReturnStatus.CANCELLING, ReturnStatus.CANCELLED,
     ReturnStatus.EXPIRED}
)  # fmt: skip


@dataclass
class ParkedSaga:
    """One saga waiting for an operator: why, where, since when, and the commands that apply."""

    key: str
    kind: Kind | None
    workflow_type: str
    run_id: str | None
    status: str | None = None
    reason: str | None = None
    step: str | None = None
    system: str | None = None
    system_from: str | None = None  # "failure" (its details) or "step" (the system the step calls)
    since: datetime | None = None
    since_what: str = "the saga started"
    # False for a warning the saga raised without stopping (a late shipment): retry and skip do not apply.
    parked: bool = True
    actions: list[str] = field(default_factory=list)  # retry, skip, cancel, approve-credit
    commands: list[str] = field(default_factory=list)
    problem: str | None = None  # why the saga's own account is missing (no worker answered)

    def age(self, now: datetime) -> timedelta | None:
        """How long it has waited."""
        return now - self.since if self.since else None

    def as_json(self, now: datetime) -> dict[str, Any]:
        """The row for scripts."""
        age = self.age(now)
        return {
            "key": self.key,
            "kind": self.kind.value if self.kind else None,
            "workflow_type": self.workflow_type,
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "step": self.step,
            "system": self.system,
            "system_from": self.system_from,
            "parked": self.parked,
            "since": self.since.isoformat() if self.since else None,
            "since_what": self.since_what,
            "age_seconds": int(age.total_seconds()) if age is not None else None,
            "actions": self.actions,
            "commands": self.commands,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class ParkingFailure:
    """The activity failure that parked a saga, as its history holds it."""

    at: datetime
    system: str | None


# ---- options ------------------------------------------------------------------------------------------------

KindOption = Annotated[Kind | None, typer.Option("--kind", help="Only orders, returns or refunds.")]
KeysArgument = Annotated[list[str] | None, typer.Argument(metavar="[KEY]...", help="These sagas (or --all).")]
AllOption = Annotated[bool, typer.Option("--all", help="Every parked saga that matches the filters.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Only sagas whose attention reason contains this text (any case).")
]
StepOption = Annotated[str | None, typer.Option("--step", help="Only sagas parked at this step (post_to_erp...).")]
TaskQueueFilter = Annotated[
    str | None, typer.Option("--task-queue", help="Only sagas on this task queue (default: every queue).")
]
LimitOption = Annotated[int, typer.Option("--limit", min=1, help="Look at most at this many parked sagas.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a worker to answer, per saga.")
]
ByOption = Annotated[
    str, typer.Option("--by", envvar="USER", help="Who is acting (recorded in each saga); default $USER.")
]
NoteOption = Annotated[
    str | None, typer.Option("--note", help="Why: what was fixed (recorded in each saga with who acted).")
]


@dataclass(frozen=True)
class Selection:
    """Which parked sagas a command is about."""

    kind: Kind | None = None
    reason: str | None = None
    step: str | None = None
    keys: tuple[str, ...] = ()

    def matches(self, saga: ParkedSaga) -> bool:
        """Whether a parked saga is one of these."""
        if self.keys and saga.key not in self.keys:
            return False
        if self.kind is not None and saga.kind is not self.kind:
            return False
        if self.step is not None and saga.step != self.step:
            return False
        return self.reason is None or self.reason.casefold() in (saga.reason or "").casefold()


# ---- list -----------------------------------------------------------------------------------------------------


@app.callback(invoke_without_command=True)
def workbench(
    ctx: typer.Context,
    kind: KindOption = None,
    reason: ReasonOption = None,
    step: StepOption = None,
    task_queue: TaskQueueFilter = None,
    limit: LimitOption = 200,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Every parked saga (orders, returns, refunds) with reason, step, system, age and the commands that fix it."""
    if ctx.invoked_subcommand is not None:
        return
    list_parked(kind, reason, step, task_queue, limit, as_json, timeout, address, namespace)


@app.command("list")
def list_parked(
    kind: KindOption = None,
    reason: ReasonOption = None,
    step: StepOption = None,
    task_queue: TaskQueueFilter = None,
    limit: LimitOption = 200,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """The same list as `orderflow attention`, oldest first."""
    _check_task_queue(task_queue)
    selection = Selection(kind=kind, reason=reason, step=step)
    sagas = asyncio.run(
        _find(
            selection, task_queue=task_queue, limit=limit, answer_within=timeout, address=address, namespace=namespace
        )
    )
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([saga.as_json(now) for saga in sagas], indent=2))
        return
    if not sagas:
        typer.echo("no parked saga" + (" matches" if selection != Selection() else "; nothing needs an operator"))
        return
    Console().print(_table(sagas, now, title=f"{len(sagas)} saga(s) need an operator  [{ATTENTION_QUERY}]"))


def _table(sagas: list[ParkedSaga], now: datetime, *, title: str) -> Table:
    table = Table(title=title, title_justify="left", show_lines=True)
    table.add_column("saga", no_wrap=True)
    table.add_column("step", min_width=8)
    table.add_column("system", min_width=7)
    table.add_column("waiting", min_width=8)
    table.add_column("reason", min_width=20, overflow="fold")
    table.add_column("fix with", overflow="fold")
    for saga in sagas:
        age = saga.age(now)
        kind = saga.kind.value if saga.kind else saga.workflow_type
        system = saga.system or "-"
        if saga.system_from == "step":
            system += " (by step)"
        reason = saga.reason or saga.problem or "-"
        if not saga.parked:
            reason = f"[yellow]warning, still running:[/] {reason}"
        table.add_row(
            f"{saga.key}\n{kind} {saga.status or ''}",
            saga.step or "-",
            system,
            f"{_duration(age)}\nsince {saga.since_what}" if age is not None else "-",
            reason,
            "\n".join(saga.commands) or "-",
        )
    return table


def _duration(age: timedelta) -> str:
    seconds = max(int(age.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def _check_task_queue(task_queue: str | None) -> None:
    if task_queue is not None and any(ch in task_queue for ch in "'\"\\"):
        _fail("--task-queue may not contain quotes or backslashes", 2)


# ---- finding and examining parked sagas -----------------------------------------------------------------------


async def _find(
    selection: Selection, *, task_queue: str | None, limit: int, answer_within: float, address: str, namespace: str
) -> list[ParkedSaga]:
    client = await connect_or_exit(address, namespace)
    return await find_parked(client, selection, task_queue=task_queue, limit=limit, answer_within=answer_within)


async def find_parked(
    client: Client, selection: Selection, *, task_queue: str | None, limit: int, answer_within: float
) -> list[ParkedSaga]:
    """The parked sagas visibility lists that match, each examined, oldest first; exit 2 if Temporal refuses."""
    clauses = [ATTENTION_QUERY]
    if task_queue:
        clauses.append(f"TaskQueue = '{task_queue}'")
    if selection.kind is not None:
        workflow_type = next(name for name, kind in KIND_OF_WORKFLOW.items() if kind is selection.kind)
        clauses.append(f"WorkflowType = '{workflow_type}'")
    if selection.keys:
        clauses.append("WorkflowId IN (" + ", ".join(f"'{key}'" for key in selection.keys) + ")")
    query = " AND ".join(clauses)
    executions: list[WorkflowExecution] = []
    try:
        async for execution in client.list_workflows(query, limit=limit, rpc_timeout=timedelta(seconds=10)):
            executions.append(execution)
    except RPCError as exc:
        _fail(*rpc_reason(exc, "the parked sagas", client.service_client.config.target_host))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def examined(execution: WorkflowExecution) -> ParkedSaga:
        async with gate:
            return await examine(client, execution, answer_within=answer_within)

    sagas = [saga for saga in await asyncio.gather(*map(examined, executions)) if selection.matches(saga)]
    return sorted(sagas, key=lambda saga: (saga.since or datetime.max.replace(tzinfo=UTC), saga.key))


async def examine(client: Client, execution: WorkflowExecution, *, answer_within: float) -> ParkedSaga:
    """One parked saga: its own account (the status query), the failure that parked it, and the fixes."""
    kind = KIND_OF_WORKFLOW.get(execution.workflow_type)
    saga = ParkedSaga(
        key=execution.id,
        kind=kind,
        workflow_type=execution.workflow_type,
        run_id=execution.run_id,
        since=execution.start_time,
    )
    if kind is None:
        saga.problem = f"a {execution.workflow_type} workflow; orderflow has no commands for it"
        return saga
    state_type: Any = {
        Kind.ORDER: OrderSagaState,
        Kind.RETURN: ReturnSagaState,
        Kind.REFUND: ChannelRefundState,
    }[kind]
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    try:
        async with asyncio.timeout(answer_within):
            state = await handle.query(QUERY_STATUS, result_type=state_type)
    except TimeoutError:
        saga.problem = f"no worker answered its status query within {answer_within:g} s; is a worker running?"
        return saga
    except (WorkflowQueryFailedError, RPCError) as exc:
        saga.problem = f"it could not answer its status query: {exc}"
        return saga
    if isinstance(state, OrderSagaState):
        _read_order(saga, state)
    elif isinstance(state, ReturnSagaState):
        _read_return(saga, state)
    elif isinstance(state, ChannelRefundState):
        saga.status, saga.reason, saga.step, saga.system = state.status.value, state.attention_reason, "credit", ERP
        saga.system_from = "step"
        saga.actions = ["retry", "skip"]
    # Only a failed step parks with a failure in the history (a credit hold is the ERP's answer, not a failure).
    lookup = saga.reason is not None and "retry" in saga.actions
    failure = await parking_failure(client, execution, saga.reason) if lookup and saga.reason else None
    if failure is not None:
        saga.since, saga.since_what = failure.at, "it failed"
        if failure.system:
            saga.system, saga.system_from = failure.system, "failure"
    saga.commands = _commands(saga)
    return saga


def _read_order(saga: ParkedSaga, state: OrderSagaState) -> None:
    saga.status, saga.reason, saga.step = state.status.value, state.attention_reason, state.attention_step
    _since_last_record(saga, [*state.steps_done, *state.compensations_done])
    step = saga.step or ""
    system = ORDER_STEP_SYSTEMS.get(step)
    if step == SagaStep.CONFIRM or system == CHANNEL:
        system = state.channel
    saga.system, saga.system_from = (system, "step") if system else (None, None)
    cancellable = state.status not in ORDER_NOT_CANCELLABLE
    if state.status is OrderStatus.CREDIT_HOLD:
        saga.actions = ["approve-credit", "cancel"]
        return
    # Late shipments and a channel's cancel after shipment are warnings: the saga still waits for the warehouse.
    if step == SagaStep.AWAIT_SHIPMENT:
        saga.parked = False
        saga.actions = ["cancel"] if cancellable and not state.lines_shipped else []
        return
    saga.actions = ["retry", *(["skip"] if step in ORDER_SKIPPABLE else []), *(["cancel"] if cancellable else [])]


def _read_return(saga: ParkedSaga, state: ReturnSagaState) -> None:
    saga.status, saga.reason, saga.step = state.status.value, state.attention_reason, state.attention_step
    _since_last_record(saga, [*state.steps_done, *state.compensations_done])
    step = saga.step or ""
    system = RETURN_STEP_SYSTEMS.get(step)
    if system == CHANNEL:
        system = state.channel
    saga.system, saga.system_from = (system, "step") if system else (None, None)
    cancellable = state.status not in RETURN_NOT_CANCELLABLE and not state.receipt_ids
    # Unexpected goods, goods after a cancel, and a refund that differs from the credit are warnings the
    # return saga raises without stopping (return_to_refund.py raises them with these words).
    if step == ReturnStep.AWAIT_RECEIPT or (saga.reason or "").startswith("the channel refunded"):
        saga.parked = False
        saga.actions = ["cancel"] if cancellable else []
        return
    saga.actions = ["retry", *(["skip"] if step in RETURN_SKIPPABLE else []), *(["cancel"] if cancellable else [])]


def _since_last_record(saga: ParkedSaga, records: list[Any]) -> None:
    """Until the failure is found: the last step recorded finished just before the saga parked."""
    if records:
        last = max(records, key=lambda record: record.at)
        what = "an operator's last action" if last.step == OPERATOR_RECORD else f"{last.step} finished"
        saga.since, saga.since_what = datetime.fromisoformat(last.at), what


async def parking_failure(client: Client, execution: WorkflowExecution, reason: str) -> ParkingFailure | None:
    """The newest activity failure whose type and message make the saga's attention reason, if its history has one."""
    # The sagas write the reason as "{type}: {message}", after "compensation failed: " for an undo.
    wanted = reason.removeprefix("compensation failed: ")
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=ExecutionRef(workflow_id=execution.id, run_id=execution.run_id or ""),
        maximum_page_size=HISTORY_PAGE,
    )
    scanned = 0
    try:
        while scanned < HISTORY_EVENTS_SCANNED:
            page = await client.workflow_service.get_workflow_execution_history_reverse(
                request, retry=True, timeout=timedelta(seconds=10)
            )
            for event in page.history.events:
                scanned += 1
                if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                    continue
                # The data converter decodes what a payload codec encrypted, details and message alike.
                error = await client.data_converter.decode_failure(event.activity_task_failed_event_attributes.failure)
                if not isinstance(error, ApplicationError) or f"{error.type}: {error.message}" != wanted:
                    continue
                at = event.event_time.ToDatetime(tzinfo=UTC)
                details = error.details[0] if error.details else None
                system = details.get("system") if isinstance(details, dict) else None
                return ParkingFailure(at=at, system=str(system) if system else None)
            if not page.next_page_token:
                return None
            request.next_page_token = page.next_page_token
    except (RPCError, ValueError, TypeError):
        # The history is a refinement (the system, the exact time); the workbench still lists the saga.
        return None
    return None


def _commands(saga: ParkedSaga) -> list[str]:
    """The command lines that apply, as an operator would type them."""
    group = {Kind.ORDER: "orders", Kind.RETURN: "returns"}.get(saga.kind) if saga.kind else None
    key = saga.key
    lines: list[str] = []
    for action in saga.actions:
        if group is None:
            lines.append(f'orderflow attention {action} {key} --note "..."')
        elif action == "cancel":
            lines.append(f'orderflow {group} cancel {key} --reason "..."')
        else:
            lines.append(f'orderflow {group} {action} {key} --note "..."')
    return lines


# ---- bulk retry and skip ---------------------------------------------------------------------------------------


def _bulk_command(action: str, summary: str) -> Callable[..., None]:
    """The `attention retry` or `attention skip` command: the same selection and safeguards, one action."""

    def command(
        keys: KeysArgument = None,
        all_: AllOption = False,
        kind: KindOption = None,
        reason: ReasonOption = None,
        step: StepOption = None,
        note: NoteOption = None,
        by: ByOption = "",
        yes: YesOption = False,
        task_queue: TaskQueueFilter = None,
        limit: LimitOption = 200,
        as_json: JsonOption = False,
        timeout: TimeoutOption = 30.0,
        address: AddressOption = DEFAULT_ADDRESS,
        namespace: NamespaceOption = DEFAULT_NAMESPACE,
    ) -> None:
        _bulk(action, keys, all_, Selection(kind=kind, reason=reason, step=step), note=note, by=by, yes=yes,
              task_queue=task_queue, limit=limit, as_json=as_json, timeout=timeout, address=address,
              namespace=namespace)  # fmt: skip

    command.__doc__ = summary
    return command


retry = app.command("retry")(
    _bulk_command(
        "retry", "Retry, after a data fix, every parked saga that matches: shows them, asks, then reports each outcome."
    )
)
skip = app.command("skip")(
    _bulk_command(
        "skip", "Skip, where the step allows it, the step every matching parked saga waits on (done by hand instead)."
    )
)


def _bulk(
    action: str,
    keys: list[str] | None,
    all_: bool,
    selection: Selection,
    *,
    note: str | None,
    by: str,
    yes: bool,
    task_queue: str | None,
    limit: int,
    as_json: bool,
    timeout: float,
    address: str,
    namespace: str,
) -> None:
    if bool(keys) == all_:
        _fail(f"name the sagas to {action} (KEY...) or pass --all, not both", 2)
    _check_task_queue(task_queue)
    if any(ch in key for key in keys or () for ch in "'\"\\"):
        _fail("a saga key may not contain quotes or backslashes", 2)
    selection = Selection(selection.kind, selection.reason, selection.step, tuple(k.strip() for k in keys or ()))
    command = OperatorCommand(requested_by=by or operator_name(), note=note)
    asyncio.run(
        _act_on_all(
            action,
            selection,
            command,
            yes=yes,
            task_queue=task_queue,
            limit=limit,
            as_json=as_json,
            answer_within=timeout,
            address=address,
            namespace=namespace,
        )
    )


async def _act_on_all(
    action: str,
    selection: Selection,
    command: OperatorCommand,
    *,
    yes: bool,
    task_queue: str | None,
    limit: int,
    as_json: bool,
    answer_within: float,
    address: str,
    namespace: str,
) -> None:
    client = await connect_or_exit(address, namespace)
    found = await find_parked(client, selection, task_queue=task_queue, limit=limit, answer_within=answer_within)
    targets = [saga for saga in found if action in saga.actions]
    left = [saga for saga in found if action not in saga.actions]
    missing = [key for key in selection.keys if key not in {saga.key for saga in found}]
    now = datetime.now(UTC)
    if not as_json:
        for saga in left:
            why = saga.problem or (
                "a warning, not parked" if not saga.parked else f"{action} does not apply at {saga.step or '-'}"
            )
            fix = f"; try {', '.join(saga.actions)}" if saga.actions else ""
            typer.echo(f"left alone: {saga.key} ({why}{fix})")
        for key in missing:
            typer.echo(f"left alone: {key} (not parked, or not found)")
        if not targets:
            typer.echo(f"no parked saga to {action}")
        else:
            Console().print(_table(targets, now, title=f"{action} {len(targets)} parked saga(s)"))
    if targets and not yes:
        typer.confirm(f"{action.capitalize()} these {len(targets)} saga(s) as {command.requested_by}?", abort=True)
    answers = [(saga, await _send(client, saga, action, command, answer_within, address)) for saga in targets]
    if as_json:
        outcome = [
            {"key": saga.key, "accepted": answer.accepted, "message": answer.message} for saga, answer in answers
        ]
        left_alone = [{"key": saga.key, "actions": saga.actions, "problem": saga.problem} for saga in left]
        typer.echo(json.dumps({"outcomes": outcome, "left_alone": left_alone, "not_found": missing}, indent=2))
    else:
        for saga, answer in answers:
            mark = "ok" if answer.accepted else "REFUSED"
            typer.echo(f"{mark}: {saga.key}: {answer.message}", err=not answer.accepted)
        accepted = sum(1 for _saga, answer in answers if answer.accepted)
        typer.echo(f"{accepted} of {len(answers)} accepted")
    if missing or any(not answer.accepted for _saga, answer in answers):
        raise typer.Exit(1)


async def _send(
    client: Client, saga: ParkedSaga, action: str, command: OperatorCommand, answer_within: float, address: str
) -> ActionAnswer:
    """The same update `orders retry` / `returns retry` send; a channel refund takes a signal (no answer)."""
    if saga.kind is Kind.REFUND:
        try:
            await client.get_workflow_handle(saga.key).signal(
                SIGNAL_RETRY if action == "retry" else SIGNAL_SKIP, command
            )
        except RPCError as exc:
            return ActionAnswer(False, *rpc_reason(exc, saga.key, address))
        return ActionAnswer(
            True, f"{action} signalled (a signal has no answer: `orderflow attention` shows the effect)"
        )
    update = {
        (Kind.ORDER, "retry"): UPDATE_RETRY,
        (Kind.ORDER, "skip"): UPDATE_SKIP,
        (Kind.RETURN, "retry"): RETURN_UPDATE_RETRY,
        (Kind.RETURN, "skip"): RETURN_UPDATE_SKIP,
    }[(saga.kind, action)]  # type: ignore[index]
    return await attempt(client, saga.key, update, command, answer_within=answer_within, address=address)
