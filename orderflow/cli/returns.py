"""`orderflow returns ...`: open a return for an order, see where a return is, and act on it as an operator.

A return opened here has no return on the channel (its origin is `operator`): the saga authorizes
it in the ERP, buys the label, waits for the goods, credits and refunds on the channel. Returns the
customer asks for on Shopify start from its `returns/request` webhook instead. Exit codes: 0 done
(or a duplicate start), 1 refused or no such return, 2 bad input, or Temporal not reachable.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from orderflow.canonical import Channel, order_key
from orderflow.canonical.return_saga import (
    QUERY_STATUS,
    UPDATE_CANCEL,
    UPDATE_RETRY,
    UPDATE_SKIP,
    WORKFLOW_TYPE,
    ReturnOrigin,
    ReturnSagaState,
    ReturnStatus,
    ReturnToRefundResult,
    operator_return,
    return_key,
    return_to_refund_input,
)
from orderflow.canonical.returns import Return
from orderflow.canonical.saga import CancelRequest, CancelSource, OperatorCommand
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
from orderflow.cli.saga_actions import act, describe_saga, guard, operator_name, rpc_failure
from orderflow.settings import get_settings
from orderflow.temporal import CHANNEL, NEEDS_ATTENTION, RETURN_STATUS, initial_return_search_attributes

app = typer.Typer(help="Return-to-refund sagas: open a return, inspect it, cancel, retry, skip, list.")


def _order_key(value: str) -> str:
    """`order:shopify:1042` or `shopify:1042` -> `order:shopify:1042`."""
    channel, sep, channel_order_id = value.strip().removeprefix("order:").partition(":")
    if not sep or not channel_order_id:
        raise typer.BadParameter(f"expected order:CHANNEL:ID or CHANNEL:ID (e.g. shopify:1042), got {value!r}")
    try:
        return order_key(channel, channel_order_id)
    except ValueError:
        raise typer.BadParameter(f"unknown channel {channel!r}; orderflow knows {_channels()}") from None


def _return_key(value: str) -> str:
    """`return:shopify:5001` or `shopify:5001` -> `return:shopify:5001`."""
    channel, sep, return_id = value.strip().removeprefix("return:").partition(":")
    if not sep or not return_id:
        raise typer.BadParameter(f"expected return:CHANNEL:ID or CHANNEL:ID (e.g. shopify:5001), got {value!r}")
    try:
        return return_key(channel, return_id)
    except ValueError:
        raise typer.BadParameter(f"unknown channel {channel!r}; orderflow knows {_channels()}") from None


def _channels() -> str:
    return ", ".join(c.value for c in Channel)


def parse_lines(value: str) -> list[tuple[str, int]]:
    """`SKU:QTY,SKU:QTY` -> [(sku, qty)], refusing anything else with the part that is wrong."""
    lines: list[tuple[str, int]] = []
    for part in (p.strip() for p in value.split(",")):
        sku, sep, quantity = part.rpartition(":")
        if not sep or not sku.strip() or not quantity.strip().isdigit() or int(quantity) <= 0:
            raise typer.BadParameter(f"{part!r} is not SKU:QTY with a quantity of 1 or more")
        lines.append((sku.strip(), int(quantity)))
    return lines


KeyArgument = Annotated[
    str, typer.Argument(metavar="KEY", callback=_return_key, help="The return: return:shopify:5001 or shopify:5001.")
]
ByOption = Annotated[
    str, typer.Option("--by", envvar="USER", help="Who is acting (recorded in the saga); default $USER.")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a worker to answer.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def start(
    order: Annotated[str, typer.Option("--order", callback=_order_key, help="The order: shopify:1042.")],
    lines: Annotated[str, typer.Option("--lines", help="What comes back: SKU:QTY,SKU:QTY.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why the customer returns it.")] = None,
    return_id: Annotated[
        str | None,
        typer.Option("--return-id", help="The return's id (letters, digits, - and _); default: a new one."),
    ] = None,
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Open a return of shipped units of an order; the saga checks them against what shipped."""
    try:
        parsed = parse_lines(lines)
    except typer.BadParameter as exc:
        fail(f"--lines: {exc}", 2)
    if return_id is not None and not all(ch.isalnum() or ch in "-_" for ch in return_id):
        fail(f"--return-id {return_id!r} may hold only letters, digits, - and _", 2)
    quantities: dict[str, int] = {}
    for sku, quantity in parsed:
        quantities[sku] = quantities.get(sku, 0) + quantity
    try:
        request = operator_return(
            order,
            quantities,
            return_id=return_id or f"ops-{uuid.uuid4().hex[:12]}",
            requested_at=datetime.now(UTC),
            reason=reason,
        )
        saga_input = return_to_refund_input(request, origin=ReturnOrigin.OPERATOR, settings=get_settings().returns)
    except ValidationError as exc:
        fail("invalid return: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), 2)
    asyncio.run(_start(request, saga_input, task_queue=task_queue, address=address, namespace=namespace))


async def _start(request: Return, saga_input: Any, *, task_queue: str, address: str, namespace: str) -> None:
    client = await connect_or_exit(address, namespace)
    try:
        await client.start_workflow(
            WORKFLOW_TYPE,
            saga_input,
            id=request.key,
            task_queue=task_queue,
            # One return, one saga, as the webhook service starts them.
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=initial_return_search_attributes(request),
            static_summary=f"{request.channel.value} return {request.return_id} of {request.order_key}",
        )
    except WorkflowAlreadyStartedError:
        typer.echo(f"{request.key} already exists; nothing started")
        return
    except RPCError as exc:
        rpc_failure(exc, request.key, address)
    typer.echo(f"started {request.key} for {request.order_key}")


@app.command()
def status(
    key: KeyArgument,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Show where a return is: status, steps, what came back (and in what condition), credit and refund."""
    asyncio.run(_status(key, as_json=as_json, answer_within=timeout, address=address, namespace=namespace))


async def _status(key: str, *, as_json: bool, answer_within: float, address: str, namespace: str) -> None:
    client = await connect_or_exit(address, namespace)
    description = await describe_saga(client, key)
    if description is None:
        fail(f"no saga for {key}", 1)
    handle = client.get_workflow_handle(key, result_type=ReturnToRefundResult)
    execution = description.status.name if description.status else "UNKNOWN"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        state = (await guard(handle.result(), key, address)).state
    else:
        try:
            async with asyncio.timeout(answer_within):
                state = await handle.query(QUERY_STATUS, result_type=ReturnSagaState)
        except TimeoutError:
            fail(f"no worker answered the status query of {key} within {answer_within:g} s; is a worker running?", 2)
        except WorkflowQueryFailedError as exc:
            fail(f"the saga {key} could not answer its status: {exc}", 1)
        except RPCError as exc:
            rpc_failure(exc, key, address)
    if as_json:
        typer.echo(json.dumps({"execution": execution, **state.model_dump(mode="json")}, indent=2))
        return
    Console().print(_state_panel(state, execution))


def _state_panel(state: ReturnSagaState, execution: str) -> Panel:
    def quantities(lines: dict[str, int]) -> str:
        return ", ".join(f"{sku} x{qty}" for sku, qty in lines.items()) or "-"

    headline = f"[bold]{state.key}[/] ({state.origin.value}) of {state.order_key}"
    rows = [
        f"{headline}: [bold]{state.status.value}[/] ({execution})",
        f"step: {state.current_step.value if state.current_step else '-'}",
        f"requested: {quantities(state.lines_requested)}",
        f"received: {quantities(state.lines_received)}; damaged: {quantities(state.lines_damaged)}",
        f"ERP credit: {state.erp_credit_total or '-'}; refunded: {state.refund_total or '-'}",
    ]
    ids = {k: v for k, v in state.ids.model_dump().items() if v}
    if ids:
        rows.append("ids: " + ", ".join(f"{k}={v}" for k, v in ids.items()))
    if state.refusal_reasons:
        rows.append("[red]refused:[/] " + "; ".join(state.refusal_reasons))
    if state.needs_attention:
        rows.append(f"[red]needs attention at {state.attention_step}:[/] {state.attention_reason}")
    if state.cancel_reason:
        rows.append(f"cancelled: {state.cancel_reason}")
    return Panel("\n".join(rows), title="return", expand=False)


@app.command()
def cancel(
    key: KeyArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the saga.")],
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Cancel a return before the goods arrive: the label is voided and the authorization closed."""
    if not reason.strip():
        fail("--reason must say why the return is cancelled", 2)
    request = CancelRequest(reason=reason, source=CancelSource.OPERATOR, requested_by=by or operator_name())
    asyncio.run(act(key, UPDATE_CANCEL, request, answer_within=timeout, address=address, namespace=namespace))


@app.command()
def retry(
    key: KeyArgument,
    note: Annotated[str | None, typer.Option("--note", help="What was fixed.")] = None,
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Retry the step a parked return is waiting on, after fixing what parked it."""
    command = OperatorCommand(requested_by=by or operator_name(), note=note)
    asyncio.run(act(key, UPDATE_RETRY, command, answer_within=timeout, address=address, namespace=namespace))


@app.command()
def skip(
    key: KeyArgument,
    note: Annotated[str | None, typer.Option("--note", help="Why the step may be skipped.")] = None,
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Skip the step a parked return is waiting on, where the step allows it."""
    command = OperatorCommand(requested_by=by or operator_name(), note=note)
    asyncio.run(act(key, UPDATE_SKIP, command, answer_within=timeout, address=address, namespace=namespace))


@app.command("list")
def list_returns(
    status_filter: Annotated[ReturnStatus | None, typer.Option("--status", help="Only returns in this status.")] = None,
    needs_attention: Annotated[
        bool, typer.Option("--needs-attention", help="Only returns parked for an operator.")
    ] = False,
    channel: Annotated[Channel | None, typer.Option("--channel", help="Only returns from this channel.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """List return sagas from Temporal's visibility (the search attributes the UI shows)."""
    clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
    if status_filter is not None:
        clauses.append(f"{RETURN_STATUS.name} = '{status_filter.value}'")
    if needs_attention:
        clauses.append(f"{NEEDS_ATTENTION.name} = true")
    if channel is not None:
        clauses.append(f"{CHANNEL.name} = '{channel.value}'")
    query = " AND ".join(clauses)
    rows = asyncio.run(_list(query, limit=limit, address=address, namespace=namespace))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} return saga(s)  [{query}]", title_justify="left")
    table.add_column("key", no_wrap=True)
    table.add_column("status", min_width=9)
    table.add_column("attention", min_width=9)
    table.add_column("channel", min_width=7)
    table.add_column("started", min_width=10)
    for row in rows:
        ended = "" if row["execution"] == "RUNNING" else f" ({row['execution'].lower()})"
        table.add_row(
            row["key"],
            f"{row['status'] or '-'}{ended}",
            "[red]yes[/]" if row["needs_attention"] else "",
            row["channel"] or "-",
            row["started"][:16].replace("T", " "),
        )
    Console().print(table)


async def _list(query: str, *, limit: int, address: str, namespace: str) -> list[dict[str, Any]]:
    client = await connect_or_exit(address, namespace)
    rows: list[dict[str, Any]] = []
    try:
        async for execution in client.list_workflows(query, limit=limit, rpc_timeout=timedelta(seconds=10)):
            attributes = execution.typed_search_attributes
            rows.append(
                {
                    "key": execution.id,
                    "status": attributes.get(RETURN_STATUS),
                    "needs_attention": bool(attributes.get(NEEDS_ATTENTION)),
                    "channel": attributes.get(CHANNEL),
                    "execution": execution.status.name if execution.status else "UNKNOWN",
                    "started": execution.start_time.astimezone(UTC).isoformat(timespec="seconds"),
                }
            )
    except RPCError as exc:
        rpc_failure(exc, "the return list", address)
    return rows
