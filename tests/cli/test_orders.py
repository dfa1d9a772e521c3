"""`orderflow orders ...` on the real dev server with a stand-in saga: what started, what was refused, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner

from orderflow.adapters.shopify import order_from_webhook
from orderflow.canonical import Order
from orderflow.canonical.saga import (
    QUERY_STATUS,
    UPDATE_APPROVE_CREDIT,
    UPDATE_CANCEL,
    ActionOutcome,
    CancelRequest,
    CreditApproval,
    OrderSagaState,
    OrderStatus,
    OrderToCashInput,
    OrderToCashResult,
)
from orderflow.cli import app
from orderflow.temporal import ORDER_STATUS

runner = CliRunner()

SHIPPED_REFUSAL = "order has shipped; a return is the only way to undo it"
HOLD_NOTE = "stand-in: hold for credit"


@workflow.defn(name="OrderToCash")
class StandInOrderToCash:
    """Stands in for the saga: records the operator's requests; refuses a cancel once told the order shipped."""

    def __init__(self) -> None:
        self.order: Order | None = None
        self.status = OrderStatus.RECEIVED
        self.shipped = False
        self.cancels: list[CancelRequest] = []
        self.approvals: list[CreditApproval] = []

    @workflow.run
    async def run(self, start: OrderToCashInput) -> OrderToCashResult:
        self.order = start.order
        self.status = OrderStatus.CREDIT_HOLD if start.order.note == HOLD_NOTE else OrderStatus.ACCEPTED
        workflow.upsert_search_attributes([ORDER_STATUS.value_set(self.status.value)])
        await workflow.wait_condition(lambda: self.status is OrderStatus.CANCELLED)
        return OrderToCashResult(key=start.order.key, status=self.status, state=self.state())

    @workflow.signal(name="test_mark_shipped")
    def mark_shipped(self) -> None:
        """The test says the warehouse shipped the order."""
        self.shipped = True
        self.status = OrderStatus.SHIPPED

    @workflow.update(name=UPDATE_CANCEL)
    def request_cancel(self, request: CancelRequest) -> ActionOutcome:
        """Cancel, recording who asked and why."""
        self.cancels.append(request)
        self.status = OrderStatus.CANCELLED
        return ActionOutcome(accepted=True, message="cancelling; undoing: nothing to undo")

    @request_cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self.shipped:
            raise ValueError(SHIPPED_REFUSAL)

    @workflow.update(name=UPDATE_APPROVE_CREDIT)
    def request_credit_approval(self, approval: CreditApproval) -> ActionOutcome:
        """Approve credit only on hold; otherwise answer 'not accepted' as data."""
        if self.status is not OrderStatus.CREDIT_HOLD:
            return ActionOutcome(accepted=False, message="the order is not on credit hold")
        self.approvals.append(approval)
        self.status = OrderStatus.CREDIT_APPROVED
        return ActionOutcome(accepted=True, message=f"credit approved by {approval.approved_by}")

    @workflow.query(name=QUERY_STATUS)
    def state(self) -> OrderSagaState:
        """The stand-in's state, shaped like the saga's."""
        assert self.order is not None
        return OrderSagaState(
            key=self.order.key,
            channel=self.order.channel.value,
            status=self.status,
            lines_ordered={line.sku: line.quantity for line in self.order.lines},
        )

    @workflow.query(name="received")
    def received(self) -> dict[str, Any]:
        """What the CLI sent: the cancels and approvals, as recorded."""
        return {
            "cancels": [c.model_dump(mode="json") for c in self.cancels],
            "approvals": [a.model_dump(mode="json") for a in self.approvals],
        }


def shopify_body(order_id: int, *, note: str | None = None, sku: str = "TSHIRT-001") -> dict[str, Any]:
    """A Shopify orders/create body (the real REST shape) for one T-shirt."""
    return {
        "id": order_id,
        "name": f"#{order_id}",
        "order_number": order_id,
        "email": "buyer@example.com",
        "created_at": "2026-01-23T23:10:15-05:00",
        "currency": "USD",
        "total_price": "121.00",
        "financial_status": "paid",
        "note": note,
        "line_items": [{"id": 1, "sku": sku, "name": "T-Shirt - M", "quantity": 2, "price": "49.50", "tax_lines": []}],
        "shipping_lines": [{"title": "Standard", "code": "std", "price": "22.00", "tax_lines": []}],
        "shipping_address": {
            "first_name": "Ada",
            "last_name": "L",
            "address1": "1 Main St",
            "city": "Austin",
            "province_code": "TX",
            "zip": "78701",
            "country_code": "US",
        },
        "customer": {"id": 207119551, "email": "buyer@example.com"},
    }


@dataclass
class Cli:
    """The CLI pointed at the test's dev server and task queue, run off the event loop like a real process."""

    client: Client
    task_queue: str
    tmp_path: Path
    started: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "TEMPORAL_ADDRESS": self.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": self.client.namespace,
            "ORDERFLOW_TASK_QUEUE": self.task_queue,
            "USER": "alice",
            # Wide enough that rich does not fold a saga key across lines.
            "COLUMNS": "200",
        }

    async def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        # The CLI calls asyncio.run itself, which cannot nest in the test's loop: give it a thread.
        return await asyncio.to_thread(runner.invoke, app, list(args), env=env or self.env)

    def write(self, name: str, data: Any) -> Path:
        path = self.tmp_path / name
        path.write_text(json.dumps(data))
        return path

    async def start_order(self, *, note: str | None = None) -> str:
        """Start a fresh canonical order through the CLI and return its saga key."""
        order = order_from_webhook(shopify_body(unique_order_id(), note=note))
        self.started.append(order.key)
        result = await self.run("orders", "start", "--file", str(self.write(f"{uuid.uuid4()}.json", canonical(order))))
        assert result.exit_code == 0, result.output
        return order.key


def unique_order_id() -> int:
    return uuid.uuid4().int % 10**12


def canonical(order: Order) -> dict[str, Any]:
    return order.model_dump(mode="json")


@pytest.fixture
async def cli(dev_server: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cli]:
    """A stand-in saga worker on a fresh task queue; sagas the test left running are terminated afterwards."""
    task_queue = f"cli-{uuid.uuid4()}"
    harness = Cli(client=dev_server.client, task_queue=task_queue, tmp_path=tmp_path)
    async with Worker(
        dev_server.client,
        task_queue=task_queue,
        workflows=[StandInOrderToCash],
        # The stand-in lives in a test module full of non-workflow imports; it needs no sandbox.
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield harness
    for key in harness.started:
        # Already ended, or never started: either way nothing is left running.
        with contextlib.suppress(RPCError):
            await dev_server.client.get_workflow_handle(key).terminate("test finished")


async def describe_status(client: Client, key: str) -> WorkflowExecutionStatus | None:
    try:
        return (await client.get_workflow_handle(key).describe()).status
    except RPCError as exc:
        assert exc.status is RPCStatusCode.NOT_FOUND
        return None


# ---- start ------------------------------------------------------------------------------------------


async def test_a_valid_canonical_order_starts_its_saga_with_that_order(cli: Cli) -> None:
    key = await cli.start_order()

    assert await describe_status(cli.client, key) is WorkflowExecutionStatus.RUNNING
    state = await cli.client.get_workflow_handle(key).query(QUERY_STATUS, result_type=OrderSagaState)
    assert state.key == key and state.lines_ordered == {"TSHIRT-001": 2}


async def test_a_shopify_body_is_mapped_and_starts_the_saga_under_the_shopify_key(cli: Cli) -> None:
    order_id = unique_order_id()
    key = f"order:shopify:{order_id}"
    cli.started.append(key)

    result = await cli.run(
        "orders", "start", "--format", "shopify", "--file", str(cli.write("create.json", shopify_body(order_id)))
    )

    assert result.exit_code == 0, result.output
    assert f"started {key}" in result.output
    assert await describe_status(cli.client, key) is WorkflowExecutionStatus.RUNNING


async def test_an_invalid_order_exits_2_with_its_field_errors_and_starts_nothing(cli: Cli) -> None:
    order = order_from_webhook(shopify_body(unique_order_id()))
    data = canonical(order)
    data["lines"] = []
    data["currency"] = "dollars"

    result = await cli.run("orders", "start", "--file", str(cli.write("bad.json", data)))

    assert result.exit_code == 2
    assert "no saga was started" in result.output
    assert "lines" in result.output and "currency" in result.output
    assert await describe_status(cli.client, order.key) is None


async def test_a_shopify_line_without_a_sku_exits_2_naming_the_field(cli: Cli) -> None:
    order_id = unique_order_id()
    body = shopify_body(order_id, sku="")

    result = await cli.run("orders", "start", "--format", "shopify", "--file", str(cli.write("nosku.json", body)))

    assert result.exit_code == 2
    assert "line_items[0].sku" in result.output
    assert await describe_status(cli.client, f"order:shopify:{order_id}") is None


async def test_a_file_that_is_not_json_exits_2(cli: Cli) -> None:
    path = cli.tmp_path / "order.json"
    path.write_text("{not json")

    result = await cli.run("orders", "start", "--file", str(path))

    assert result.exit_code == 2
    assert "is not JSON" in result.output


async def test_starting_the_same_order_twice_exits_0_and_keeps_one_saga(cli: Cli) -> None:
    order = order_from_webhook(shopify_body(unique_order_id()))
    cli.started.append(order.key)
    path = cli.write("order.json", canonical(order))
    first = await cli.run("orders", "start", "--file", str(path))
    run_id = (await cli.client.get_workflow_handle(order.key).describe()).run_id

    second = await cli.run("orders", "start", "--file", str(path))

    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert "already running" in second.output
    assert (await cli.client.get_workflow_handle(order.key).describe()).run_id == run_id


# ---- status -----------------------------------------------------------------------------------------


async def test_status_shows_the_sagas_state_as_a_panel_and_as_json(cli: Cli) -> None:
    key = await cli.start_order(note=HOLD_NOTE)

    panel = await cli.run("orders", "status", key.removeprefix("order:"))
    as_json = await cli.run("orders", "status", key, "--json")

    assert panel.exit_code == 0, panel.output
    assert key in panel.output and "CREDIT_HOLD" in panel.output and "TSHIRT-001" in panel.output
    assert as_json.exit_code == 0, as_json.output
    state = json.loads(as_json.output)
    assert state["key"] == key and state["status"] == "CREDIT_HOLD" and state["execution"] == "RUNNING"


async def test_status_of_a_finished_saga_comes_from_its_result(cli: Cli) -> None:
    key = await cli.start_order()
    assert (await cli.run("orders", "cancel", key, "--reason", "duplicate order")).exit_code == 0
    await cli.client.get_workflow_handle(key).result()

    result = await cli.run("orders", "status", key, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "CANCELLED"
    assert json.loads(result.output)["execution"] == "COMPLETED"


# ---- operator actions ----------------------------------------------------------------------------------


async def test_a_cancel_before_shipment_is_accepted_and_recorded_with_who_and_why(cli: Cli) -> None:
    key = await cli.start_order()

    result = await cli.run("orders", "cancel", key, "--reason", "customer called", "--by", "bob")

    assert result.exit_code == 0, result.output
    assert "cancelling" in result.output
    handle = cli.client.get_workflow_handle(key, result_type=OrderToCashResult)
    assert (await handle.result()).status is OrderStatus.CANCELLED
    received = await handle.query("received")
    assert received["cancels"] == [{"reason": "customer called", "source": "operator", "requested_by": "bob"}]


async def test_by_defaults_to_the_user_running_the_command(cli: Cli) -> None:
    key = await cli.start_order(note=HOLD_NOTE)

    result = await cli.run("orders", "approve-credit", key, "--note", "paid by wire")

    assert result.exit_code == 0, result.output
    received = await cli.client.get_workflow_handle(key).query("received")
    assert received["approvals"] == [{"approved_by": "alice", "note": "paid by wire"}]


async def test_a_cancel_after_shipment_is_refused_with_the_reason_and_exits_1(cli: Cli) -> None:
    key = await cli.start_order()
    handle = cli.client.get_workflow_handle(key)
    await handle.signal("test_mark_shipped")

    result = await cli.run("orders", "cancel", key, "--reason", "too late")

    assert result.exit_code == 1
    assert SHIPPED_REFUSAL in result.output
    assert (await handle.query("received"))["cancels"] == []
    assert await describe_status(cli.client, key) is WorkflowExecutionStatus.RUNNING


async def test_an_action_the_saga_answers_as_not_accepted_exits_1_with_its_message(cli: Cli) -> None:
    key = await cli.start_order()

    result = await cli.run("orders", "approve-credit", key)

    assert result.exit_code == 1
    assert "not on credit hold" in result.output


async def test_an_action_on_a_finished_saga_is_refused(cli: Cli) -> None:
    key = await cli.start_order()
    assert (await cli.run("orders", "cancel", key, "--reason", "first")).exit_code == 0
    await cli.client.get_workflow_handle(key).result()

    result = await cli.run("orders", "cancel", key, "--reason", "second")

    assert result.exit_code == 1
    assert "already ended" in result.output


async def test_an_unknown_order_exits_1_with_no_saga(cli: Cli) -> None:
    for args in (
        ("orders", "status", "shopify:does-not-exist"),
        ("orders", "cancel", "order:shopify:does-not-exist", "--reason", "x"),
        ("orders", "retry", "shopify:does-not-exist"),
    ):
        result = await cli.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "no saga for order:shopify:does-not-exist" in result.output


async def test_a_malformed_key_exits_2(cli: Cli) -> None:
    result = await cli.run("orders", "status", "1042")

    assert result.exit_code == 2
    assert "CHANNEL:ID" in result.output


async def test_an_unreachable_temporal_exits_2(cli: Cli) -> None:
    env = {**cli.env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    path = cli.write("order.json", canonical(order_from_webhook(shopify_body(unique_order_id()))))
    for args in (
        ("orders", "status", "shopify:1042"),
        ("orders", "skip", "shopify:1042"),
        ("orders", "start", "--file", str(path)),
        ("orders", "list", "--from-temporal"),
    ):
        result = await cli.run(*args, env=env)
        assert result.exit_code == 2, (args, result.output)
        assert "not reachable at 127.0.0.1:1" in result.output


# ---- list -------------------------------------------------------------------------------------------------


async def test_list_filters_by_order_status(cli: Cli) -> None:
    held = await cli.start_order(note=HOLD_NOTE)
    accepted = await cli.start_order()

    # Visibility is eventually consistent: ask until the held saga's upsert is indexed.
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        result = await cli.run(
            "orders", "list", "--from-temporal", "--status", "CREDIT_HOLD", "--json", "--limit", "1000"
        )
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        if held in {row["key"] for row in rows}:
            break
        await asyncio.sleep(0.1)

    keys = {row["key"] for row in rows}
    assert held in keys and accepted not in keys
    assert {row["status"] for row in rows} == {"CREDIT_HOLD"}
    table = await cli.run(
        "orders", "list", "--from-temporal", "--status", "CREDIT_HOLD", "--channel", "shopify", "--limit", "1000"
    )
    assert table.exit_code == 0, table.output
    assert held in table.output and accepted not in table.output
