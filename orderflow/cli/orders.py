"""`orderflow orders ...`: start a saga from a file, see where an order is, and act on it as an operator.

Operator actions go through the saga's updates, not signals, so the answer says whether the action
was accepted and, if not, why. `list` reads the order view in orderflow's database, so it needs
neither Temporal nor the ERP (`--from-temporal` asks Temporal's visibility instead). Exit codes:
0 done (or a duplicate start), 1 refused or no such saga, 2 bad input, or Temporal or the
database not reachable.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from orderflow.adapters.errors import AdapterError
from orderflow.adapters.shopify import order_from_webhook
from orderflow.canonical import Channel, Order
from orderflow.canonical.order import order_key
from orderflow.canonical.saga import (
    QUERY_STATUS,
    UPDATE_APPROVE_CREDIT,
    UPDATE_CANCEL,
    UPDATE_RETRY,
    UPDATE_SKIP,
    CancelRequest,
    CancelSource,
    CreditApproval,
    OperatorCommand,
    OrderSagaState,
    OrderStatus,
    OrderToCashInput,
    OrderToCashResult,
    OrderView,
)
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
from orderflow.cli.saga_actions import act as _act
from orderflow.cli.saga_actions import describe_saga as _describe
from orderflow.cli.saga_actions import guard as _guard
from orderflow.cli.saga_actions import operator_name as _operator
from orderflow.cli.saga_actions import rpc_failure as _rpc_failure
from orderflow.settings import database_url, get_settings
from orderflow.store.db import Database, DatabaseNotMigratedError
from orderflow.store.order_view import MAX_PAGE, OrderViews
from orderflow.temporal import (
    CHANNEL,
    CUSTOMER_ID,
    NEEDS_ATTENTION,
    ORDER_STATUS,
    ORDER_TOTAL,
    initial_search_attributes,
)

app = typer.Typer(help="Order-to-cash sagas: start, inspect, cancel, approve credit, retry, skip, list.")

WORKFLOW_TYPE = "OrderToCash"


class InputFormat(StrEnum):
    """What an order file holds."""

    CANONICAL = "canonical"
    SHOPIFY = "shopify"


def _saga_key(value: str) -> str:
    """`order:shopify:1042` or `shopify:1042` -> `order:shopify:1042`."""
    channel, sep, channel_order_id = value.strip().removeprefix("order:").partition(":")
    if not sep or not channel_order_id:
        raise typer.BadParameter(f"expected order:CHANNEL:ID or CHANNEL:ID (e.g. shopify:1042), got {value!r}")
    try:
        return order_key(channel, channel_order_id)
    except ValueError:
        channels = ", ".join(c.value for c in Channel)
        raise typer.BadParameter(f"unknown channel {channel!r}; orderflow knows {channels}") from None


KeyArgument = Annotated[
    str, typer.Argument(metavar="KEY", callback=_saga_key, help="The order: order:shopify:1042 or shopify:1042.")
]
ByOption = Annotated[
    str, typer.Option("--by", envvar="USER", help="Who is acting (recorded in the saga); default $USER.")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a worker to answer.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# ---- start ---------------------------------------------------------------------------------------


@app.command()
def start(
    file: Annotated[
        Path,
        typer.Option("--file", exists=True, dir_okay=False, readable=True, help="The order, as JSON."),
    ],
    input_format: Annotated[
        InputFormat, typer.Option("--format", help="canonical Order JSON, or a Shopify orders/create body.")
    ] = InputFormat.CANONICAL,
    task_queue: TaskQueueOption = TASK_QUEUE,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Start an order's saga from a file; an order that already has one is left alone (exit 0)."""
    order = _read_order(file, input_format)
    asyncio.run(_start(order, task_queue=task_queue, address=address, namespace=namespace))


def _read_order(file: Path, input_format: InputFormat) -> Order:
    """The file as a canonical order, or exit 2 with every field that is wrong."""
    try:
        data = json.loads(file.read_bytes())
    except (OSError, ValueError) as exc:
        fail(f"{file} is not JSON: {exc}", 2)
    if not isinstance(data, dict):
        fail(f"{file} holds a JSON {type(data).__name__}, not an order object", 2)
    try:
        if input_format is InputFormat.CANONICAL:
            return Order.model_validate(data)
        return order_from_webhook(data)
    except ValidationError as exc:
        _invalid(file, [f"{'.'.join(str(p) for p in err['loc']) or '(order)'}: {err['msg']}" for err in exc.errors()])
    except AdapterError as exc:
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        _invalid(file, [f"{field}: {exc.message}" if field else exc.message])
    # A body of the wrong shape (a list where an object belongs) trips the mapping; it is still bad input.
    except (AttributeError, TypeError, ValueError) as exc:
        _invalid(file, [f"not a Shopify orders/create body: {exc}"])


def _invalid(file: Path, errors: list[str]) -> NoReturn:
    fail(f"{file} is not a valid order; no saga was started:\n" + "\n".join(f"  - {e}" for e in errors), 2)


async def _start(order: Order, *, task_queue: str, address: str, namespace: str) -> None:
    client = await connect_or_exit(address, namespace)
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE,
            OrderToCashInput(order=order),
            id=order.key,
            task_queue=task_queue,
            # One order, one saga: neither a second start while it runs nor a rerun after it ended
            # (the webhook service starts sagas with the same policies).
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=initial_search_attributes(order),
            static_summary=f"{order.channel.value} order {order.order_number}",
        )
    except WorkflowAlreadyStartedError:
        description = await _describe(client, order.key)
        if description is not None and description.status is not WorkflowExecutionStatus.RUNNING:
            status = description.status.name if description.status else "CLOSED"
            typer.echo(f"{order.key} already ran ({status}); a finished order is not started again")
        else:
            typer.echo(f"{order.key} is already running; nothing started")
        return
    except RPCError as exc:
        _rpc_failure(exc, order.key, address)
    typer.echo(f"started {order.key} on task queue {task_queue!r} (run {handle.result_run_id})")


# ---- status ----------------------------------------------------------------------------------------


@app.command()
def status(
    key: KeyArgument,
    as_json: JsonOption = False,
    timeout: TimeoutOption = 10.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Show where an order is: status, steps done, ids in each system, lines shipped, attention reason."""
    asyncio.run(_status(key, as_json=as_json, answer_within=timeout, address=address, namespace=namespace))


async def _status(key: str, *, as_json: bool, answer_within: float, address: str, namespace: str) -> None:
    client = await connect_or_exit(address, namespace)
    description = await _describe(client, key)
    if description is None:
        fail(f"no saga for {key}", 1)
    handle = client.get_workflow_handle(key, result_type=OrderToCashResult)
    execution = description.status.name if description.status else "UNKNOWN"
    if description.status is WorkflowExecutionStatus.COMPLETED:
        # The result is in the history: no worker needs to answer for a finished saga.
        state = (await _guard(handle.result(), key, address)).state
    else:
        state = await _query_state(handle, key, answer_within=answer_within, address=address)
    if as_json:
        typer.echo(json.dumps({"execution": execution, **state.model_dump(mode="json")}, indent=2))
        return
    Console().print(_state_panel(state, execution))


async def _query_state(
    handle: WorkflowHandle[Any, Any], key: str, *, answer_within: float, address: str
) -> OrderSagaState:
    try:
        async with asyncio.timeout(answer_within):
            return await handle.query(QUERY_STATUS, result_type=OrderSagaState)
    except TimeoutError:
        fail(f"no worker answered the status query of {key} within {answer_within:g} s; is a worker running?", 2)
    except WorkflowQueryFailedError as exc:
        fail(f"the saga {key} could not answer its status: {exc}", 1)
    except RPCError as exc:
        _rpc_failure(exc, key, address)


def _state_panel(state: OrderSagaState, execution: str) -> Panel:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("status", f"{state.status.value}  (workflow {execution})")
    summary.add_row("channel", state.channel)
    summary.add_row("current step", state.current_step.value if state.current_step else "-")
    if state.needs_attention:
        summary.add_row(
            "NEEDS ATTENTION", f"[red]{state.attention_reason or ''}[/] (step {state.attention_step or '-'})"
        )
    if state.cancel_reason:
        summary.add_row("cancel reason", state.cancel_reason)
    summary.add_row("delivered", "yes" if state.delivered else "no")
    parts: list[Any] = [summary]

    for title, records in (("steps done", state.steps_done), ("compensations done", state.compensations_done)):
        if records:
            table = Table(title=title, title_justify="left")
            table.add_column("step", no_wrap=True)
            table.add_column("at", overflow="fold")
            table.add_column("detail")
            for record in records:
                table.add_row(record.step, record.at, record.detail or "")
            parts.append(table)

    ids = {name: value for name, value in state.ids.model_dump().items() if value not in (None, [], "")}
    if ids:
        table = Table(title="ids in each system", title_justify="left")
        table.add_column("id")
        table.add_column("value")
        for name, value in ids.items():
            table.add_row(name, ", ".join(value) if isinstance(value, list) else str(value))
        parts.append(table)

    if state.lines_ordered:
        table = Table(title="lines", title_justify="left")
        for column in ("sku", "ordered", "shipped"):
            table.add_column(column)
        for sku, quantity in state.lines_ordered.items():
            table.add_row(sku, str(quantity), str(state.lines_shipped.get(sku, 0)))
        parts.append(table)
    return Panel(Group(*parts), title=state.key, title_align="left", expand=False)


# ---- operator actions --------------------------------------------------------------------------------


@app.command()
def cancel(
    key: KeyArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the saga and sent to the channel.")],
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Cancel an order before it ships: the saga undoes every step done, in reverse."""
    if not reason.strip():
        fail("--reason must say why the order is cancelled", 2)
    request = CancelRequest(reason=reason, source=CancelSource.OPERATOR, requested_by=by or _operator())
    asyncio.run(_act(key, UPDATE_CANCEL, request, answer_within=timeout, address=address, namespace=namespace))


@app.command("approve-credit")
def approve_credit(
    key: KeyArgument,
    note: Annotated[str | None, typer.Option("--note", help="Why the credit is approved.")] = None,
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Release an order from credit hold."""
    approval = CreditApproval(approved_by=by or _operator(), note=note)
    asyncio.run(_act(key, UPDATE_APPROVE_CREDIT, approval, answer_within=timeout, address=address, namespace=namespace))


@app.command()
def retry(
    key: KeyArgument,
    note: Annotated[str | None, typer.Option("--note", help="What was fixed.")] = None,
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Retry the step a parked saga is waiting on, after fixing what parked it."""
    command = OperatorCommand(requested_by=by or _operator(), note=note)
    asyncio.run(_act(key, UPDATE_RETRY, command, answer_within=timeout, address=address, namespace=namespace))


@app.command()
def skip(
    key: KeyArgument,
    note: Annotated[str | None, typer.Option("--note", help="Why the step may be skipped.")] = None,
    by: ByOption = "",
    timeout: TimeoutOption = 30.0,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Skip the step a parked saga is waiting on, where the step allows it."""
    command = OperatorCommand(requested_by=by or _operator(), note=note)
    asyncio.run(_act(key, UPDATE_SKIP, command, answer_within=timeout, address=address, namespace=namespace))


# ---- list ------------------------------------------------------------------------------------------------


@app.command("list")
def list_orders(
    status_filter: Annotated[OrderStatus | None, typer.Option("--status", help="Only orders in this status.")] = None,
    needs_attention: Annotated[
        bool, typer.Option("--needs-attention", help="Only orders parked for an operator.")
    ] = False,
    channel: Annotated[Channel | None, typer.Option("--channel", help="Only orders from this channel.")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer's orders.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonOption = False,
    from_temporal: Annotated[
        bool,
        typer.Option("--from-temporal", help="Ask Temporal's visibility (the UI's search attributes), not the view."),
    ] = False,
    database: Annotated[
        str | None,
        typer.Option("--database-url", help="The order view's database (default: ORDERFLOW_DATABASE_URL or SQLite)."),
    ] = None,
    address: AddressOption = DEFAULT_ADDRESS,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """List orders from the order view (no Temporal or ERP call); `--from-temporal` asks Temporal instead."""
    if not from_temporal:
        if customer is not None and not customer.strip():
            fail("--customer must name a customer", 2)
        views = asyncio.run(
            _list_view(
                database or database_url(get_settings()),
                status=status_filter,
                needs_attention=needs_attention,
                channel=channel,
                customer=customer,
                limit=limit,
            )
        )
        _print_views(views, as_json=as_json)
        return
    clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
    if status_filter is not None:
        clauses.append(f"{ORDER_STATUS.name} = '{status_filter.value}'")
    if needs_attention:
        clauses.append(f"{NEEDS_ATTENTION.name} = true")
    if channel is not None:
        clauses.append(f"{CHANNEL.name} = '{channel.value}'")
    if customer is not None:
        if any(ch in customer for ch in "'\"\\"):
            fail("--customer may not contain quotes or backslashes", 2)
        clauses.append(f"{CUSTOMER_ID.name} = '{customer}'")
    query = " AND ".join(clauses)
    rows = asyncio.run(_list(query, limit=limit, address=address, namespace=namespace))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} order saga(s)  [{query}]", title_justify="left")
    # Minimum widths keep every column readable in an 80-column (or piped) terminal; long values wrap.
    table.add_column("key", no_wrap=True)
    table.add_column("status", min_width=9)
    table.add_column("attention", min_width=9)
    table.add_column("channel", min_width=7)
    table.add_column("customer", min_width=8)
    table.add_column("total", justify="right", min_width=8)
    table.add_column("started", min_width=10)
    for row in rows:
        ended = "" if row["execution"] == "RUNNING" else f" ({row['execution'].lower()})"
        table.add_row(
            row["key"],
            f"{row['status'] or '-'}{ended}",
            "[red]yes[/]" if row["needs_attention"] else "",
            row["channel"] or "-",
            row["customer_id"] or "-",
            f"{row['total']:.2f}" if row["total"] is not None else "-",
            row["started"][:16].replace("T", " "),
        )
    Console().print(table)


async def _list_view(
    url: str,
    *,
    status: OrderStatus | None,
    needs_attention: bool,
    channel: Channel | None,
    customer: str | None,
    limit: int,
) -> list[OrderView]:
    """Up to `limit` orders from the view, newest first; exit 2 if the database cannot be read."""
    shown = make_url(url).render_as_string(hide_password=True)
    database = Database(url)
    views: list[OrderView] = []
    try:
        await database.require_migrated()
        store, cursor = OrderViews(database), None
        while len(views) < limit:
            page = await store.list(
                status=status,
                needs_attention=True if needs_attention else None,
                channel=channel.value if channel else None,
                customer=customer,
                limit=min(limit - len(views), MAX_PAGE),
                cursor=cursor,
            )
            views.extend(page.orders)
            cursor = page.next_cursor
            if cursor is None:
                break
    except DatabaseNotMigratedError as exc:
        fail(str(exc), 2)
    except (SQLAlchemyError, OSError) as exc:
        # The class name only: a driver's message can carry connection details.
        fail(f"cannot read the order view in {shown} ({exc.__class__.__name__})", 2)
    finally:
        await database.dispose()
    return views


def _print_views(views: list[OrderView], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([view.model_dump(mode="json", exclude={"state"}) for view in views], indent=2))
        return
    table = Table(title=f"{len(views)} order(s) in the order view", title_justify="left")
    # Minimum widths keep every column readable in an 80-column (or piped) terminal; long values wrap.
    table.add_column("key", no_wrap=True)
    table.add_column("status", min_width=9)
    table.add_column("attention", min_width=9)
    table.add_column("channel", min_width=7)
    table.add_column("customer", min_width=8)
    table.add_column("total", justify="right", min_width=8)
    table.add_column("updated", min_width=10)
    for view in views:
        attention = f"[red]{view.attention_step or 'yes'}[/]: {view.attention_reason}" if view.needs_attention else ""
        table.add_row(
            view.key,
            view.status.value,
            attention,
            view.channel,
            view.erp_customer_id or view.channel_customer_id or "-",
            f"{view.order_total.amount:.2f} {view.order_total.currency}",
            view.updated_at.astimezone(UTC).isoformat(timespec="minutes").replace("T", " ")[:16],
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
                    "status": attributes.get(ORDER_STATUS),
                    "needs_attention": bool(attributes.get(NEEDS_ATTENTION)),
                    "channel": attributes.get(CHANNEL),
                    "customer_id": attributes.get(CUSTOMER_ID),
                    "total": attributes.get(ORDER_TOTAL),
                    "execution": execution.status.name if execution.status else "UNKNOWN",
                    "started": execution.start_time.astimezone(UTC).isoformat(timespec="seconds"),
                }
            )
    except RPCError as exc:
        _rpc_failure(exc, "the order list", address)
    return rows
