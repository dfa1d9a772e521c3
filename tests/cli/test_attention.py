"""`orderflow attention` on the real dev server: real order sagas, parked by stand-in systems, listed and retried."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import Result
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner
from workflows.fake_systems import FakeSystems, make_order, shipment_for

from orderflow.activities.failures import to_application_error
from orderflow.adapters.errors import ValidationRejectedError
from orderflow.canonical.saga import (
    OPERATOR_RECORD,
    OperatorCommand,
    OrderSagaState,
    OrderStatus,
    OrderToCashInput,
    OrderToCashResult,
    ShipmentConfirmed,
)
from orderflow.cli import app
from orderflow.temporal import initial_search_attributes
from orderflow.workflows.order_to_cash import OrderToCash

runner = CliRunner()

# The system each failing activity calls, as the real activities name it in the failure's details.
SYSTEM_OF = {"post_sales_order": "netsuite", "buy_label": "carrier"}
FIX_NOTE = "item BOLT-M8-S mapped in NetSuite"


@dataclass
class SystemsThatNameThemselves(FakeSystems):
    """The stand-in systems, failing as the real activities do: an adapter's error, translated, naming its system."""

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        remaining = self.failures.get(name, 0)
        if remaining:
            if remaining > 0:
                self.failures[name] = remaining - 1
            error = ValidationRejectedError(
                f"{name} rejected by the test", system=SYSTEM_OF[name], status_code=400, vendor_code="INVALID_FLD"
            )
            raise to_application_error(error)


@dataclass
class Workbench:
    """Three real sagas on a fresh task queue: two parked at different steps, one running normally."""

    client: Client
    task_queue: str
    systems: SystemsThatNameThemselves
    erp_parked: str = ""
    label_parked: str = ""
    running: str = ""
    started: list[str] = field(default_factory=list)

    def handle(self, key: str) -> WorkflowHandle[Any, OrderToCashResult]:
        return self.client.get_workflow_handle(key, result_type=OrderToCashResult)

    async def start(self) -> str:
        order = make_order(str(uuid.uuid4().int % 10**12))
        await self.client.start_workflow(
            OrderToCash.run,
            OrderToCashInput(order=order),
            id=order.key,
            task_queue=self.task_queue,
            search_attributes=initial_search_attributes(order),
        )
        self.started.append(order.key)
        return order.key

    async def until(self, key: str, check: Callable[[OrderSagaState], bool]) -> OrderSagaState:
        """Poll the saga's status query until `check` holds."""
        for _ in range(200):
            state = await self.handle(key).query(OrderToCash.state)
            if check(state):
                return state
            await asyncio.sleep(0.05)
        raise AssertionError(f"{key} never reached the expected state; last: {state.model_dump_json()}")

    async def cli(self, *args: str, input: str | None = None) -> Result:
        """The CLI pointed at the dev server and this test's task queue, off the event loop like a real process."""
        env = {
            "TEMPORAL_ADDRESS": self.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": self.client.namespace,
            "USER": "alice",
            "COLUMNS": "250",
        }
        # The workbench looks at this test's queue only: other tests leave parked sagas on the shared server.
        argv = [*args, "--task-queue", self.task_queue] if args[0] == "attention" else list(args)
        return await asyncio.to_thread(runner.invoke, app, argv, env=env, input=input)

    async def listed(self, count: int) -> list[dict[str, Any]]:
        """The workbench's JSON, once visibility shows `count` parked sagas (it lags the sagas a little)."""
        for _ in range(100):
            result = await self.cli("attention", "list", "--json")
            assert result.exit_code == 0, result.output
            rows: list[dict[str, Any]] = json.loads(result.stdout)
            if len(rows) == count:
                return rows
            await asyncio.sleep(0.1)
        raise AssertionError(f"the workbench never listed {count} saga(s); last: {rows}")


@pytest.fixture
async def workbench(dev_server: WorkflowEnvironment) -> AsyncIterator[Workbench]:
    """Park one order at the ERP posting and one at the label, and let a third run; terminate them afterwards."""
    systems = SystemsThatNameThemselves(failures={"post_sales_order": 1})
    bench = Workbench(client=dev_server.client, task_queue=f"attention-{uuid.uuid4()}", systems=systems)
    async with Worker(
        dev_server.client, task_queue=bench.task_queue, workflows=[OrderToCash], activities=systems.activities()
    ):
        bench.erp_parked = await bench.start()
        await bench.until(bench.erp_parked, lambda s: s.attention_step == "post_to_erp")
        # One failure each: the fake's count runs out, as the data would be fixed, before the retry.
        systems.failures["buy_label"] = 1
        bench.label_parked = await bench.start()
        await bench.until(bench.label_parked, lambda s: s.attention_step == "buy_label")
        bench.running = await bench.start()
        await bench.until(bench.running, lambda s: s.status is OrderStatus.RELEASED)
        yield bench
    for key in bench.started:
        with contextlib.suppress(RPCError):
            await bench.client.get_workflow_handle(key).terminate("test over")


async def test_the_workbench_lists_exactly_the_parked_sagas_with_reason_step_system_and_fixes(
    workbench: Workbench,
) -> None:
    rows = {row["key"]: row for row in await workbench.listed(2)}

    assert set(rows) == {workbench.erp_parked, workbench.label_parked}
    erp, label = rows[workbench.erp_parked], rows[workbench.label_parked]
    assert erp["kind"] == "order" and erp["status"] == "ALLOCATED" and erp["step"] == "post_to_erp"
    assert erp["reason"] == (
        "ValidationRejectedError: netsuite HTTP 400 INVALID_FLD: post_sales_order rejected by the test"
    )
    # The system comes from the failure's details, and the age from when it failed, both read from the history.
    assert (erp["system"], erp["system_from"], erp["since_what"]) == ("netsuite", "failure", "it failed")
    assert 0 <= erp["age_seconds"] < 120
    assert erp["actions"] == ["retry", "cancel"]  # posting to the ERP cannot be skipped
    assert erp["commands"] == [
        f'orderflow orders retry {workbench.erp_parked} --note "..."',
        f'orderflow orders cancel {workbench.erp_parked} --reason "..."',
    ]
    assert (label["step"], label["system"], label["system_from"]) == ("buy_label", "carrier", "failure")
    assert label["actions"] == ["retry", "skip", "cancel"]
    # The one that fails first waited longest: oldest first.
    assert list(rows) == [workbench.erp_parked, workbench.label_parked]

    table = await workbench.cli("attention")
    assert table.exit_code == 0, table.output
    assert "2 saga(s) need an operator" in table.stdout
    assert workbench.running not in table.stdout
    assert f"orderflow orders skip {workbench.label_parked}" in table.stdout
    assert f"orderflow orders skip {workbench.erp_parked}" not in table.stdout


async def test_a_bulk_retry_after_a_data_fix_completes_exactly_the_matching_sagas_and_records_who_and_why(
    workbench: Workbench,
) -> None:
    await workbench.listed(2)
    declined = await workbench.cli("attention", "retry", "--all", "--reason", "post_sales_order", input="n\n")
    assert declined.exit_code == 1 and workbench.erp_parked in declined.stdout
    assert (await workbench.until(workbench.erp_parked, lambda s: True)).needs_attention  # nothing was sent

    result = await workbench.cli(
        "attention", "retry", "--all", "--reason", "POST_SALES_ORDER", "--by", "alice", "--note", FIX_NOTE, "--yes"
    )
    assert result.exit_code == 0, result.output
    assert f"ok: {workbench.erp_parked}: retrying post_to_erp" in result.stdout
    assert "1 of 1 accepted" in result.stdout and workbench.label_parked not in result.stdout

    await workbench.until(workbench.erp_parked, lambda s: s.status is OrderStatus.RELEASED)
    order = make_order(workbench.erp_parked.rsplit(":", 1)[1])
    await workbench.handle(workbench.erp_parked).signal(
        OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment_for(order))
    )
    done = await workbench.handle(workbench.erp_parked).result()
    label = await workbench.until(workbench.label_parked, lambda s: True)

    # Retrying a saga that is no longer parked is refused, and says so.
    again = await workbench.cli("attention", "retry", workbench.erp_parked, "--yes")
    assert again.exit_code == 1 and f"left alone: {workbench.erp_parked} (not parked" in again.stdout

    assert done.status is OrderStatus.COMPLETED
    assert workbench.systems.calls.count("post_sales_order") == 4  # parked, the other two sagas, then the retry
    assert label.needs_attention and label.attention_step == "buy_label"  # not matched, not retried
    # Who and why: in the saga's own record (so in the order view), and in its history.
    record = f"retry post_to_erp by alice: {FIX_NOTE}"
    assert [(r.step, r.detail) for r in done.state.steps_done if r.step == OPERATOR_RECORD] == [
        (OPERATOR_RECORD, record)
    ]
    views = [v.state for v in workbench.systems.order_views if v.state.key == workbench.erp_parked]
    assert record in [r.detail for r in views[-1].steps_done]
    history = await workbench.handle(workbench.erp_parked).fetch_history()
    updates = [
        event.workflow_execution_update_accepted_event_attributes.accepted_request
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert [
        pydantic_data_converter.payload_converter.from_payload(u.input.args.payloads[0], OperatorCommand)
        for u in updates
    ] == [OperatorCommand(requested_by="alice", note=FIX_NOTE)]


async def test_a_bulk_skip_leaves_unskippable_steps_alone_and_skips_and_cancels_are_recorded_with_who_and_why(
    workbench: Workbench,
) -> None:
    await workbench.listed(2)

    skipped = await workbench.cli("attention", "skip", "--all", "--note", "the warehouse buys the label", "--yes")

    # Posting to the ERP cannot be skipped: left alone, with what does apply; not a refusal.
    assert skipped.exit_code == 0, skipped.output
    assert f"left alone: {workbench.erp_parked} (skip does not apply at post_to_erp; try retry, cancel)" in (
        skipped.stdout
    )
    assert f"ok: {workbench.label_parked}: skipping buy_label" in skipped.stdout
    label = await workbench.until(workbench.label_parked, lambda s: s.status is OrderStatus.RELEASED)
    assert (OPERATOR_RECORD, "skip buy_label by alice: the warehouse buys the label") in [
        (r.step, r.detail) for r in label.steps_done
    ]

    cancelled = await workbench.cli("orders", "cancel", workbench.erp_parked, "--reason", "discontinued item")
    assert cancelled.exit_code == 0, cancelled.output
    done = await workbench.handle(workbench.erp_parked).result()
    assert done.status is OrderStatus.CANCELLED
    records = [(r.step, r.detail) for r in done.state.steps_done]
    assert (OPERATOR_RECORD, "cancel by alice: discontinued item") in records
    assert await workbench.listed(0) == []
