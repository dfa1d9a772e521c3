"""The saga keeps the order view current: what it sent at each transition, on the time-skipping server."""

from __future__ import annotations

import itertools

from fake_systems import FakeSystems
from temporalio.testing import WorkflowEnvironment
from test_order_to_cash import released, running_saga

from orderflow.canonical import PaymentTerms
from orderflow.canonical.saga import CancelRequest, CreditApproval, CreditDecision, OperatorCommand, OrderStatus
from orderflow.workflows.order_to_cash import OrderToCash


def assert_versions_count_up(systems: FakeSystems) -> None:
    versions = [update.version for update in systems.order_views]
    assert versions == list(range(versions[0], versions[0] + len(versions)))


async def test_the_view_follows_the_happy_path_to_completed(time_skipping: WorkflowEnvironment) -> None:
    async with running_saga(time_skipping) as saga:
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()

    systems = saga.systems
    assert systems.view_statuses() == [
        "RECEIVED", "CREDIT_APPROVED", "ALLOCATED", "POSTED", "LABELLED", "RELEASED", "SHIPPED", "FULFILLED",
        "COMPLETED",
    ]  # fmt: skip
    assert_versions_count_up(systems)
    assert systems.order_views[0].version == 1
    # ACCEPTED and CREDIT_APPROVED (prepaid) happen in one workflow task: one update, the later state.
    assert "ACCEPTED" not in systems.view_statuses()
    # Every update says something new; the last is exactly how the saga ended.
    states = [update.state for update in systems.order_views]
    assert all(a != b for a, b in itertools.pairwise(states))
    last = systems.order_views[-1]
    assert last.state == result.state
    assert last.channel_order_id == "1042" and last.channel_customer_id == "207119551"
    assert str(last.order_total.amount) == "30" and last.order_total.currency == "USD"


async def test_the_view_shows_a_credit_hold_then_the_cancellation(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeSystems(terms=PaymentTerms.TERMS, credit=CreditDecision.HOLD)
    async with running_saga(time_skipping, systems, terms=True) as saga:
        await saga.until(lambda s: s.status is OrderStatus.CREDIT_HOLD)
        await saga.until(lambda _: systems.view_statuses()[-1] == "CREDIT_HOLD")
        held = systems.order_views[-1].state
        await saga.handle.execute_update(OrderToCash.request_credit_approval, CreditApproval(approved_by="ops"))
        await saga.until(released)
        await saga.handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="customer asked"))
        result = await saga.handle.result()

    assert held.needs_attention and held.attention_step == "credit_check"
    assert held.attention_reason is not None and held.attention_reason.startswith("credit hold:")
    statuses = systems.view_statuses()
    assert statuses[:3] == ["RECEIVED", "ACCEPTED", "CREDIT_HOLD"]
    assert statuses[-2:] == ["CANCELLING", "CANCELLED"]
    assert_versions_count_up(systems)
    last = systems.order_views[-1].state
    assert last == result.state and last.cancel_reason == "customer asked" and not last.needs_attention
    assert [c.step for c in last.compensations_done] == [
        "cancel_fulfillment_order", "void_label", "close_sales_order", "release_allocation", "cancel_on_channel",
    ]  # fmt: skip


async def test_the_view_shows_a_parked_order_with_its_reason_until_it_is_retried(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeSystems(failures={"post_sales_order": -1})
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(lambda s: s.needs_attention)
        await saga.until(lambda _: systems.order_views[-1].state.needs_attention)
        parked = systems.order_views[-1].state
        systems.failures.clear()
        await saga.handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        await saga.until(released)
        await saga.ship()
        await saga.handle.result()

    assert parked.status is OrderStatus.ALLOCATED
    assert parked.attention_step == "post_to_erp"
    assert parked.attention_reason == "ValidationRejectedError: post_sales_order rejected by the test"
    last = systems.order_views[-1].state
    assert last.status is OrderStatus.COMPLETED and not last.needs_attention and last.attention_reason is None
    assert_versions_count_up(systems)


async def test_a_view_that_cannot_be_written_neither_fails_nor_parks_the_saga(
    time_skipping: WorkflowEnvironment,
) -> None:
    # Three attempts of the first update fail (it is given up), the next update's first attempt fails too.
    systems = FakeSystems(order_view_failures=4)
    async with running_saga(time_skipping, systems) as saga:
        await saga.until(released)
        await saga.ship()
        result = await saga.handle.result()

    assert result.status is OrderStatus.COMPLETED and not result.state.needs_attention
    assert systems.order_view_failures == 0
    # Version 1 (RECEIVED) was lost; the next update carried the whole state, so the view caught up.
    assert systems.order_views[0].version == 2
    assert systems.order_views[-1].state == result.state
