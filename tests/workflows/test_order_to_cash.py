"""The order-to-cash saga on the time-skipping server, with stand-in systems that record what happened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fake_systems import FakeSystems, make_order, shipment_for
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.canonical import PaymentTerms
from orderflow.canonical.saga import (
    SIGNAL_CANCEL,
    CancelRequest,
    CancelSource,
    CreditApproval,
    CreditDecision,
    OperatorCommand,
    OrderSagaState,
    OrderStatus,
    OrderToCashInput,
    OrderToCashResult,
    SagaTimeouts,
    ShipmentConfirmed,
    StockAvailable,
)
from orderflow.workflows.order_to_cash import OrderToCash

# The undo of each step, in the order the steps run.
UNDO_OF = {
    "allocate": "release_allocation",
    "post_sales_order": "close_sales_order",
    "buy_label": "void_label",
    "release_to_warehouse": "cancel_fulfillment_order",
}


@dataclass
class Saga:
    """A running saga under test, its fake systems and its handle."""

    handle: WorkflowHandle[OrderToCash, OrderToCashResult]
    systems: FakeSystems
    env: WorkflowEnvironment

    async def state(self) -> OrderSagaState:
        return await self.handle.query(OrderToCash.state)

    async def until(self, check: Callable[[OrderSagaState], bool], timeout: float = 10) -> OrderSagaState:
        """Poll the status query until `check` holds (real time; timers do not skip while polling)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.state()
            if check(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"saga never reached the expected state; last: {state.model_dump_json()}")
            await asyncio.sleep(0.05)

    async def ship(self, shipment_id: str = "S1", lines: dict[str, int] | None = None) -> None:
        order = make_order()
        await self.handle.signal(
            OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment_for(order, shipment_id, lines=lines))
        )


@asynccontextmanager
async def running_saga(
    env: WorkflowEnvironment,
    systems: FakeSystems | None = None,
    *,
    terms: bool = False,
    timeouts: SagaTimeouts | None = None,
) -> AsyncIterator[Saga]:
    systems = systems or FakeSystems()
    queue = f"o2c-{uuid.uuid4()}"
    order = make_order(terms=terms)
    async with Worker(env.client, task_queue=queue, workflows=[OrderToCash], activities=systems.activities()):
        handle = await env.client.start_workflow(
            OrderToCash.run,
            OrderToCashInput(order=order, timeouts=timeouts or SagaTimeouts()),
            id=f"{order.key}-{uuid.uuid4()}",
            task_queue=queue,
        )
        yield Saga(handle=handle, systems=systems, env=env)


def released(state: OrderSagaState) -> bool:
    return state.status is OrderStatus.RELEASED


async def test_an_order_goes_from_acceptance_to_invoice(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    systems = saga.systems
    assert systems.calls == [
        "accept_order", "allocate", "post_sales_order", "buy_label", "release_to_warehouse",
        "confirm_shipment_on_channel", "record_fulfillment", "invoice_order",
    ]  # fmt: skip
    assert list(systems.sales_orders.values()) == ["open"]
    assert systems.channel_fulfillments == ["1ZS1"] and systems.erp_fulfillments == ["S1"]
    assert len(systems.invoices) == 1
    state = result.state
    assert [s.step for s in state.steps_done] == [
        "accept", "credit_check", "allocate", "post_to_erp", "buy_label", "release", "confirm", "await_shipment",
        "invoice",
    ]  # fmt: skip
    assert state.ids.erp_order_id == "4321" and state.ids.erp_invoice_id == "INV-1"
    assert state.ids.tracking_numbers == ["1ZLABEL", "1ZS1"]
    assert not state.needs_attention


async def test_partial_shipments_are_confirmed_one_by_one_and_invoiced_once(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        state = await saga.until(lambda s: s.status is OrderStatus.PARTIALLY_SHIPPED and "S1" in str(s.steps_done))
        assert state.lines_shipped == {"BOLT-M8-S": 2}
        await saga.ship("S1", {"BOLT-M8-S": 2})  # a repeated webhook delivery
        await saga.ship("S2", {"NUT-M8-M": 1})
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert saga.systems.erp_fulfillments == ["S1", "S2"]
    assert saga.systems.channel_fulfillments == ["1ZS1", "1ZS2"]
    assert len(saga.systems.invoices) == 1


STEP_FAILURES = [
    # (failing activity, saga step it parks at, undo activities the operator's cancel must run)
    ("accept_order", "accept", []),
    ("check_credit", "credit_check", []),
    ("allocate", "allocate", ["release_allocation"]),
    ("post_sales_order", "post_to_erp", ["close_sales_order", "release_allocation"]),
    ("buy_label", "buy_label", ["void_label", "close_sales_order", "release_allocation"]),
    ("release_to_warehouse", "release",
     ["cancel_fulfillment_order", "void_label", "close_sales_order", "release_allocation"]),
]  # fmt: skip


@pytest.mark.parametrize(("failing", "step", "undo"), STEP_FAILURES, ids=[f[1] for f in STEP_FAILURES])
async def test_a_permanent_failure_parks_and_an_operator_cancel_undoes_what_was_done(
    time_skipping: WorkflowEnvironment, failing: str, step: str, undo: list[str]
) -> None:
    systems = FakeSystems(failures={failing: -1}, terms=PaymentTerms.TERMS)
    async with running_saga(time_skipping, systems, terms=True) as saga:
        state = await saga.until(lambda s: s.needs_attention)
        assert state.attention_step == step
        assert f"{failing} rejected by the test" in (state.attention_reason or "")

        outcome = await saga.handle.execute_update(
            OrderToCash.request_cancel, CancelRequest(reason="bad data", requested_by="ops")
        )
        assert outcome.accepted
        result = await saga.handle.result()

    assert result.status is OrderStatus.CANCELLED
    # The undos of the steps begun, newest first, each once; then the channel is told.
    assert systems.compensations() == [*undo, "cancel_on_channel"]
    assert "held" not in systems.reservations.values()
    assert "open" not in systems.sales_orders.values()
    assert "bought" not in systems.labels.values()
    assert "released" not in systems.wms_orders.values()
    assert [c.step for c in result.state.compensations_done] == [*undo, "cancel_on_channel"]
    assert not result.state.needs_attention


@pytest.mark.parametrize("failing", ["confirm_shipment_on_channel", "record_fulfillment", "invoice_order"])
async def test_after_shipment_a_parked_step_cannot_be_cancelled_but_can_be_retried(
    time_skipping: WorkflowEnvironment, failing: str
) -> None:
    systems = FakeSystems(failures={failing: 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship()
        await saga.until(lambda s: s.needs_attention)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="too late"))
        assert "has shipped" in str(refused.value.cause)

        outcome = await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        assert outcome.accepted
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert systems.calls.count(failing) == 2
    assert systems.compensations() == []


async def test_a_skippable_step_can_be_skipped_and_an_unskippable_one_cannot(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeSystems(failures={"buy_label": -1, "post_sales_order": 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(lambda s: s.attention_step == "post_to_erp")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_skip, OperatorCommand(requested_by="ops"))
        assert "cannot be skipped" in str(refused.value.cause)
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))

        await saga.until(lambda s: s.attention_step == "buy_label")
        await saga.handle.execute_update(OrderToCash.request_skip, OperatorCommand(requested_by="ops"))
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED
    assert "buy_label" in [s.step for s in result.state.steps_done]
    assert systems.labels == {}


async def test_credit_hold_waits_for_approval(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(terms=PaymentTerms.TERMS, credit=CreditDecision.HOLD)
    async with running_saga(time_skipping, systems, terms=True) as saga:
        state = await saga.until(lambda s: s.status is OrderStatus.CREDIT_HOLD)
        assert state.needs_attention and "credit hold" in (state.attention_reason or "")
        outcome = await saga.handle.execute_update(
            OrderToCash.request_credit_approval, CreditApproval(approved_by="credit-team")
        )
        assert outcome.accepted
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()
    assert result.status is OrderStatus.COMPLETED
    assert "approved by credit-team" in (result.state.steps_done[1].detail or "")


async def test_a_retry_during_a_credit_hold_is_refused_and_never_retries_a_later_step_by_itself(
    time_skipping: WorkflowEnvironment,
) -> None:
    # Invoicing fails once: had the retry sent during the hold been kept, the parked invoice step
    # would have been retried at once with nobody asking.
    systems = FakeSystems(terms=PaymentTerms.TERMS, credit=CreditDecision.HOLD, failures={"invoice_order": 1})
    async with running_saga(time_skipping, systems, terms=True) as saga:
        await saga.until(lambda s: s.status is OrderStatus.CREDIT_HOLD)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        assert "on credit hold: approve-credit releases it" in str(refused.value.cause)
        await saga.handle.signal(OrderToCash.on_retry, OperatorCommand(requested_by="ops"))  # ignored too
        await saga.handle.execute_update(OrderToCash.request_credit_approval, CreditApproval(approved_by="credit"))
        await saga.until(released)
        await saga.ship()
        state = await saga.until(lambda s: s.needs_attention and s.attention_step == "invoice")
        assert systems.calls.count("invoice_order") == 1
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()
    assert state.attention_step == "invoice" and result.status is OrderStatus.COMPLETED
    assert systems.calls.count("invoice_order") == 2


async def test_the_credit_hold_deadline_cancels_and_tells_the_channel(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(terms=PaymentTerms.TERMS, credit=CreditDecision.HOLD)
    async with running_saga(time_skipping, systems, terms=True) as saga:
        await saga.until(lambda s: s.status is OrderStatus.CREDIT_HOLD)
        result = await saga.handle.result()  # waiting on the result lets the server skip the 48 h
    assert result.status is OrderStatus.CANCELLED
    assert "credit hold not released" in (result.state.cancel_reason or "")
    assert systems.compensations() == ["cancel_on_channel"]
    assert "allocate" not in systems.calls


async def test_approving_an_order_not_on_hold_is_refused(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_credit_approval, CreditApproval(approved_by="x"))
        assert "not on credit hold" in str(refused.value.cause)
        await saga.ship()
        await saga.handle.result()


async def test_a_backordered_order_allocates_when_stock_arrives(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(backordered_allocations=1)
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(lambda s: s.status is OrderStatus.BACKORDERED)
        await saga.handle.signal(OrderToCash.on_stock_available, StockAvailable(skus=["BOLT-M8-S"]))
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()
    assert result.status is OrderStatus.COMPLETED
    assert systems.calls.count("allocate") == 2


async def test_a_backorder_past_its_deadline_cancels_with_compensation(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(backordered_allocations=1000)
    timeouts = SagaTimeouts(backorder=timedelta(days=2), backorder_recheck=timedelta(hours=6))
    async with running_saga(time_skipping, systems, timeouts=timeouts) as saga:
        await saga.until(lambda s: s.status is OrderStatus.BACKORDERED)
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert "backordered past" in (result.state.cancel_reason or "")
    # Re-checked every 6 h for 2 days: the first try plus 8 re-checks.
    assert systems.calls.count("allocate") == 9
    assert systems.compensations() == ["release_allocation", "cancel_on_channel"]


async def test_cancel_before_shipment_undoes_every_step_in_reverse(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        outcome = await saga.handle.execute_update(
            OrderToCash.request_cancel, CancelRequest(reason="customer changed their mind", requested_by="ops")
        )
        assert "cancel_fulfillment_order, void_label, close_sales_order, release_allocation" in outcome.message
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert saga.systems.compensations() == [
        "cancel_fulfillment_order", "void_label", "close_sales_order", "release_allocation", "cancel_on_channel",
    ]  # fmt: skip


async def test_a_cancel_from_the_channel_is_not_sent_back_to_the_channel(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.handle.signal(OrderToCash.on_cancel, CancelRequest(reason="customer", source=CancelSource.CHANNEL))
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert saga.systems.channel_cancellations == []
    assert saga.systems.compensations()[-1] == "release_allocation"


async def test_a_buyer_request_signalled_at_start_cancels_on_the_channel_before_any_step(
    time_skipping: WorkflowEnvironment,
) -> None:
    # Amazon's buyer asked to cancel before the poller first saw the order: the saga is started with
    # the cancel in it (signal-with-start). Nothing was done, so the only undo is telling the channel,
    # which still has the order open: a buyer's request is not the channel's cancellation.
    systems = FakeSystems()
    queue = f"o2c-{uuid.uuid4()}"
    order = make_order()
    request = CancelRequest(reason="the buyer asked the channel to cancel", source=CancelSource.BUYER)
    async with Worker(time_skipping.client, task_queue=queue, workflows=[OrderToCash], activities=systems.activities()):
        handle = await time_skipping.client.start_workflow(
            OrderToCash.run,
            OrderToCashInput(order=order),
            id=f"{order.key}-{uuid.uuid4()}",
            task_queue=queue,
            start_signal=SIGNAL_CANCEL,
            start_signal_args=[request],
        )
        result = await handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert systems.calls == ["cancel_on_channel"]
    assert [c.step for c in result.state.compensations_done] == ["cancel_on_channel"]


async def test_availability_is_published_after_the_reservation_and_after_its_release(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="customer", requested_by="x"))
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    # Stock is shared with the other channels: they hear of the reservation and of its release.
    assert saga.systems.availability == [["BOLT-M8-S", "NUT-M8-M"], ["BOLT-M8-S", "NUT-M8-M"]]


async def test_a_listing_that_cannot_be_updated_never_holds_up_the_order(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping, FakeSystems(availability_failures=1)) as saga:
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()
    assert result.status is OrderStatus.COMPLETED
    assert not result.state.needs_attention and saga.systems.availability == []


async def test_cancel_after_shipment_is_refused_with_the_reason(time_skipping: WorkflowEnvironment) -> None:
    # Invoicing fails once, so the saga is still running, parked, after everything shipped. (A cancel
    # of a partly shipped order is accepted: tests/workflows/test_partial_cancel.py.)
    async with running_saga(time_skipping, FakeSystems(failures={"invoice_order": 1})) as saga:
        await saga.until(released)
        await saga.ship("S1", {"BOLT-M8-S": 2})
        await saga.ship("S2", {"NUT-M8-M": 1})
        await saga.until(lambda s: s.attention_step == "invoice")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="too late"))
        assert "has shipped (2 shipment(s)); a return is the only way to undo it" in str(refused.value.cause)
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()
    assert result.status is OrderStatus.COMPLETED
    assert saga.systems.compensations() == []


async def test_a_failed_compensation_parks_until_an_operator_retries(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(failures={"void_label": 1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="ops"))
        state = await saga.until(lambda s: s.needs_attention)
        assert state.attention_step == "void_label" and "compensation failed" in (state.attention_reason or "")
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert systems.labels == {"OF-shopify-1042": "refunded"}
    assert systems.compensations().count("void_label") == 2


async def test_a_refused_warehouse_cancel_parks_the_compensation(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(refuse_wms_cancel=True)
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="ops"))
        state = await saga.until(lambda s: s.needs_attention)
        assert "refused to cancel: label created" in (state.attention_reason or "")
        await saga.handle.execute_update(OrderToCash.request_skip, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert result.state.compensations_done[0].detail == "skipped by operator"


async def test_a_temporal_cancel_before_shipment_compensates(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.handle.cancel()
        result = await saga.handle.result()
    assert result.status is OrderStatus.CANCELLED
    assert saga.systems.compensations()[0] == "cancel_fulfillment_order"


async def test_a_missed_shipment_sla_raises_attention_without_failing(time_skipping: WorkflowEnvironment) -> None:
    timeouts = SagaTimeouts(shipment_sla=timedelta(hours=1))
    async with running_saga(time_skipping, timeouts=timeouts) as saga:
        await saga.until(released)
        await saga.env.sleep(timedelta(hours=2))
        state = await saga.until(lambda s: s.needs_attention)
        assert "SLA" in (state.attention_reason or "") and state.status is OrderStatus.RELEASED
        await saga.ship()
        result = await saga.handle.result()
    assert result.status is OrderStatus.COMPLETED
    assert not result.state.needs_attention
