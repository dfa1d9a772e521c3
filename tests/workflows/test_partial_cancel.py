"""Cancelling a partly shipped order: the rest is cancelled in the warehouse and the ERP, the shipped part completes.

On the time-skipping server with the stand-in systems. Before anything ships a cancel still
undoes every step; once everything has shipped it is refused with the reason (a return undoes it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from fake_systems import FakeSystems, make_order, shipment_for
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.canonical import Order
from orderflow.canonical.saga import (
    CancelRequest,
    CancelSource,
    OperatorCommand,
    OrderSagaState,
    OrderStatus,
    OrderToCashInput,
    OrderToCashResult,
    ShipmentConfirmed,
    order_reference,
)
from orderflow.workflows.order_to_cash import OrderToCash

ORDER = make_order("2042", lines={"BOLT-M8-S": 2, "NUT-M8-M": 3})
REFERENCE = order_reference(ORDER.key)
CHANNEL_CANCEL = CancelRequest(reason="cancelled on Shopify (customer)", source=CancelSource.CHANNEL)
OPERATOR_CANCEL = CancelRequest(reason="customer phoned", source=CancelSource.OPERATOR, requested_by="ops")


@dataclass
class Saga:
    """A running saga under test, its fake systems and its handle."""

    handle: WorkflowHandle[OrderToCash, OrderToCashResult]
    systems: FakeSystems
    order: Order

    async def until(self, check: Callable[[OrderSagaState], bool], timeout: float = 10) -> OrderSagaState:
        """Poll the status query until `check` holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.handle.query(OrderToCash.state)
            if check(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"saga never reached the expected state; last: {state.model_dump_json()}")
            await asyncio.sleep(0.05)

    async def ship(self, shipment_id: str, lines: dict[str, int]) -> None:
        """The warehouse reports a parcel with these lines."""
        shipment = shipment_for(self.order, shipment_id, lines=lines)
        await self.handle.signal(OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment))

    async def shipped_and_confirmed(self, shipment_id: str) -> OrderSagaState:
        """Wait until a shipment is confirmed to the channel and the ERP."""
        return await self.until(lambda s: any(r.step == "confirm" and shipment_id in (r.detail or "")
                                              for r in s.steps_done))  # fmt: skip


@asynccontextmanager
async def running_saga(env: WorkflowEnvironment, systems: FakeSystems | None = None) -> AsyncIterator[Saga]:
    systems = systems or FakeSystems()
    queue = f"partial-{uuid.uuid4()}"
    async with Worker(env.client, task_queue=queue, workflows=[OrderToCash], activities=systems.activities()):
        handle = await env.client.start_workflow(
            OrderToCash.run, OrderToCashInput(order=ORDER), id=f"{ORDER.key}-{uuid.uuid4()}", task_queue=queue
        )
        yield Saga(handle=handle, systems=systems, order=ORDER)


def released(state: OrderSagaState) -> bool:
    return state.status is OrderStatus.RELEASED


def step(state: OrderSagaState, name: str) -> str:
    (record,) = [r for r in state.steps_done if r.step == name]
    return record.detail or ""


async def test_an_operator_cancel_of_a_partly_shipped_order_cancels_the_rest_and_invoices_what_shipped(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2, "NUT-M8-M": 1})
        await saga.shipped_and_confirmed("S1")
        outcome = await saga.handle.execute_update(OrderToCash.request_cancel, OPERATOR_CANCEL)
        assert outcome.accepted and "NUT-M8-M x2" in outcome.message
        result = await saga.handle.result()

    systems, state = saga.systems, result.state
    assert result.status is OrderStatus.COMPLETED
    # The unshipped units are cancelled in the warehouse, then closed in the ERP; nothing is undone.
    assert systems.wms_cancelled_lines == {REFERENCE: {"NUT-M8-M": 2}}
    assert systems.erp_closed_lines == {REFERENCE: {"NUT-M8-M": 2}}
    assert systems.calls[-3:] == ["cancel_unshipped_lines", "close_unshipped_lines", "invoice_order"]
    assert systems.compensations() == [] and systems.channel_cancellations == []
    assert list(systems.sales_orders.values()) == ["open"] and list(systems.labels.values()) == ["bought"]
    # Billed: what shipped, and only that.
    assert systems.invoiced_units == [{"BOLT-M8-S": 2, "NUT-M8-M": 1}]
    assert systems.channel_fulfillments == ["1ZS1"]
    assert state.lines_cancelled == {"NUT-M8-M": 2}
    assert state.lines_shipped == {"BOLT-M8-S": 2, "NUT-M8-M": 1}
    assert state.cancel_reason == "customer phoned"
    assert step(state, "cancel_unshipped") == "cancelled NUT-M8-M x2 (WMS done, ERP done); operator: customer phoned"
    assert [r.step for r in state.steps_done][-4:] == ["confirm", "cancel_unshipped", "await_shipment", "invoice"]
    # Shopify will not cancel part of an order; a person refunds the cancelled lines there.
    assert state.needs_attention and state.attention_step == "cancel_unshipped"
    assert "still holds the cancelled lines (NUT-M8-M x2)" in (state.attention_reason or "")
    # The order view ends with the same story.
    last = systems.order_views[-1].state
    assert last.status is OrderStatus.COMPLETED and last.lines_cancelled == {"NUT-M8-M": 2}


async def test_a_channel_cancel_is_not_sent_back_and_the_cancelled_order_gets_no_fulfillment_there(
    time_skipping: WorkflowEnvironment,
) -> None:
    # Shopify refuses to cancel an order it knows is partly fulfilled, so its orders/cancelled for a
    # partly shipped order crosses orderflow's confirmation, which the cancelled order then refuses.
    systems = FakeSystems(failures={"confirm_shipment_on_channel": -1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.until(lambda s: s.attention_step == "confirm")
        await saga.handle.signal(OrderToCash.on_cancel, CHANNEL_CANCEL)
        result = await saga.handle.result()

    state = result.state
    assert result.status is OrderStatus.COMPLETED
    assert systems.wms_cancelled_lines == {REFERENCE: {"NUT-M8-M": 3}}
    assert systems.erp_closed_lines == {REFERENCE: {"NUT-M8-M": 3}}
    # The channel asked: it is not cancelled again, and its cancelled order is not sent the parcel,
    # without an operator having to skip the parked confirmation.
    assert systems.channel_cancellations == [] and systems.channel_fulfillments == []
    assert systems.calls[-5:] == [
        "confirm_shipment_on_channel", "cancel_unshipped_lines", "close_unshipped_lines", "record_fulfillment",
        "invoice_order",
    ]  # fmt: skip
    assert systems.erp_fulfillments == ["S1"]
    assert systems.invoiced_units == [{"BOLT-M8-S": 2}]
    assert "not sent to the channel, which cancelled the order" in step(state, "confirm")
    assert step(state, "cancel_unshipped").endswith("channel: cancelled on Shopify (customer)")
    assert state.lines_cancelled == {"NUT-M8-M": 3}
    assert state.needs_attention and "check what the channel refunded" in (state.attention_reason or "")
    assert "BOLT-M8-S x2" in (state.attention_reason or "")


async def test_units_the_warehouse_could_no_longer_cancel_are_awaited_confirmed_and_invoiced(
    time_skipping: WorkflowEnvironment,
) -> None:
    # One nut was already picked when the cancel arrived: the warehouse ships it instead.
    systems = FakeSystems(picked_before_cancel={"NUT-M8-M": 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.shipped_and_confirmed("S1")
        await saga.handle.execute_update(OrderToCash.request_cancel, OPERATOR_CANCEL)
        state = await saga.until(lambda s: "cancel_unshipped" in [r.step for r in s.steps_done])
        assert state.status is OrderStatus.PARTIALLY_SHIPPED and state.lines_cancelled == {"NUT-M8-M": 2}
        await saga.ship("S2", {"NUT-M8-M": 1})
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    # Only what the warehouse really cancelled is closed in the ERP.
    assert systems.erp_closed_lines == {REFERENCE: {"NUT-M8-M": 2}}
    assert systems.erp_fulfillments == ["S1", "S2"]
    assert systems.invoiced_units == [{"BOLT-M8-S": 2, "NUT-M8-M": 1}]


async def test_a_cancel_while_a_confirmation_is_parked_stops_the_warehouse_first(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeSystems(failures={"record_fulfillment": 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.until(lambda s: s.needs_attention and s.attention_step == "confirm")
        await saga.handle.execute_update(OrderToCash.request_cancel, OPERATOR_CANCEL)
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    # The parked step waited no longer than the cancel: then it was tried again, and went through.
    assert systems.calls[-5:] == [
        "record_fulfillment", "cancel_unshipped_lines", "close_unshipped_lines", "record_fulfillment",
        "invoice_order",
    ]  # fmt: skip
    assert systems.invoiced_units == [{"BOLT-M8-S": 2}]


async def test_a_parked_warehouse_cancel_can_be_skipped_and_a_second_cancel_is_refused(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeSystems(failures={"cancel_unshipped_lines": -1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.shipped_and_confirmed("S1")
        await saga.handle.execute_update(OrderToCash.request_cancel, OPERATOR_CANCEL)
        state = await saga.until(lambda s: s.needs_attention)
        assert state.attention_step == "cancel_unshipped"
        assert "cancel_unshipped_lines rejected by the test" in (state.attention_reason or "")

        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="again"))
        assert "already had what had not shipped cancelled (customer phoned)" in str(refused.value.cause)

        # The operator cancelled the rest in the warehouse by hand.
        await saga.handle.execute_update(OrderToCash.request_skip, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert systems.wms_cancelled_lines == {}
    assert systems.erp_closed_lines == {REFERENCE: {"NUT-M8-M": 3}}
    assert systems.invoiced_units == [{"BOLT-M8-S": 2}]
    assert "(WMS skipped by operator, ERP done)" in step(result.state, "cancel_unshipped")


async def test_a_temporal_cancel_of_a_partly_shipped_order_cancels_the_rest(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.shipped_and_confirmed("S1")
        await saga.handle.cancel()
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert result.state.lines_cancelled == {"NUT-M8-M": 3}
    assert saga.systems.compensations() == []
    assert saga.systems.invoiced_units == [{"BOLT-M8-S": 2}]
    assert "operator: cancelled through Temporal" in step(result.state, "cancel_unshipped")


async def test_a_cancel_before_shipment_still_undoes_every_step(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.handle.signal(OrderToCash.on_cancel, CHANNEL_CANCEL)
        result = await saga.handle.result()

    systems = saga.systems
    assert result.status is OrderStatus.CANCELLED
    assert systems.compensations() == [
        "cancel_fulfillment_order", "void_label", "close_sales_order", "release_allocation",
    ]  # fmt: skip
    assert "cancel_unshipped_lines" not in systems.calls and systems.invoices == []
    assert result.state.lines_cancelled == {}


async def test_a_cancel_of_a_fully_shipped_order_is_refused_and_recorded_with_the_reason(
    time_skipping: WorkflowEnvironment,
) -> None:
    # Invoicing fails once, so the saga is still running, parked, after everything shipped.
    systems = FakeSystems(failures={"invoice_order": 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2, "NUT-M8-M": 3})
        await saga.until(lambda s: s.attention_step == "invoice")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_cancel, OPERATOR_CANCEL)
        assert "has shipped (1 shipment(s)); a return is the only way to undo it" in str(refused.value.cause)

        await saga.handle.signal(OrderToCash.on_cancel, CHANNEL_CANCEL)
        state = await saga.until(lambda s: bool(s.cancel_refusals))
        assert state.cancel_refusals == [
            f"channel: order {ORDER.key} has shipped (1 shipment(s)); a return is the only way to undo it"
        ]
        # The parked invoice keeps its attention, so the operator can still retry it.
        assert state.attention_step == "invoice"
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert systems.calls.count("cancel_unshipped_lines") == 0 and systems.compensations() == []
    assert result.state.lines_cancelled == {} and result.state.cancel_reason is None
