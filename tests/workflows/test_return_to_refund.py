"""The return-to-refund saga on the time-skipping server, with stand-in systems that record what happened."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from fake_returns import BOLT, NUT, SHIPPED_AT, FakeReturnSystems, receipt, return_request, usd
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import SearchAttributeKey
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.canonical import Return
from orderflow.canonical.return_saga import (
    CancelRequest,
    CancelSource,
    OperatorCommand,
    ReturnOrigin,
    ReturnPolicy,
    ReturnReceived,
    ReturnSagaState,
    ReturnStatus,
    ReturnToRefundInput,
    ReturnToRefundResult,
    return_step_key,
)
from orderflow.temporal import RETURN_STATUS
from orderflow.workflows.return_to_refund import ReturnToRefund

KEY = "return:shopify:5001"
REFUND_KEY = return_step_key(KEY, "refund")
CREDIT_KEY = return_step_key(KEY, "credit")
RA_KEY = return_step_key(KEY, "ra")
REFERENCE = "OFR-shopify-5001"
ALL_UNDOS = ["cancel_wms_return", "void_return_label", "close_return_authorization"]


@dataclass
class ReturnSaga:
    """A running return saga under test, its fake systems and its handle."""

    handle: WorkflowHandle[ReturnToRefund, ReturnToRefundResult]
    systems: FakeReturnSystems
    env: WorkflowEnvironment

    async def state(self) -> ReturnSagaState:
        return await self.handle.query(ReturnToRefund.state)

    async def until(self, check: Callable[[ReturnSagaState], bool], timeout: float = 10) -> ReturnSagaState:
        """Poll the status query until `check` holds (real time; timers do not skip while polling)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.state()
            if check(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"saga never reached the expected state; last: {state.model_dump_json()}")
            await asyncio.sleep(0.05)

    async def awaiting(self) -> str:
        """Wait until the warehouse expects the goods; the WMS return id."""
        state = await self.until(lambda s: s.status is ReturnStatus.AWAITING_RECEIPT)
        assert state.ids.wms_return_id is not None
        return state.ids.wms_return_id

    async def receive(self, receipt_id: str, sellable: dict[str, int] | None = None,
                      damaged: dict[str, int] | None = None) -> None:  # fmt: skip
        wms_return_id = (await self.state()).ids.wms_return_id or "RET-1"
        reference = REFERENCE.replace("5001", (await self.state()).return_id)
        message = ReturnReceived(receipt=receipt(wms_return_id, receipt_id, sellable, damaged, reference=reference))
        await self.handle.signal(ReturnToRefund.on_return_received, message)


@asynccontextmanager
async def running_return(
    env: WorkflowEnvironment,
    systems: FakeReturnSystems | None = None,
    *,
    request: Return | None = None,
    policy: ReturnPolicy | None = None,
    origin: ReturnOrigin = ReturnOrigin.CHANNEL,
) -> AsyncIterator[ReturnSaga]:
    systems = systems or FakeReturnSystems()
    request = request or return_request()
    queue = f"r2r-{uuid.uuid4()}"
    start = ReturnToRefundInput(return_request=request, origin=origin, policy=policy or ReturnPolicy())
    async with Worker(env.client, task_queue=queue, workflows=[ReturnToRefund], activities=systems.activities()):
        handle = await env.client.start_workflow(
            ReturnToRefund.run, start, id=f"{request.key}-{uuid.uuid4()}", task_queue=queue
        )
        yield ReturnSaga(handle=handle, systems=systems, env=env)


def steps(state: ReturnSagaState) -> list[str]:
    return [s.step for s in state.steps_done]


async def test_a_full_return_is_received_restocked_credited_and_refunded_once(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_return(time_skipping, request=return_request(lines={BOLT: 2, NUT: 2})) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2, NUT: 2})
        result = await saga.handle.result()

    assert result.status is ReturnStatus.COMPLETED
    systems = saga.systems
    ra = systems.authorizations[RA_KEY]
    assert ra.lines == ra.received == ra.credited == {BOLT: 2, NUT: 2}
    assert not ra.closed
    assert systems.labels == {REFERENCE: "bought"}
    assert systems.wms_returns == {REFERENCE: "awaiting"}
    assert systems.restocked == {BOLT: 2, NUT: 2}
    assert [loc for loc, _ in systems.item_receipts.values()] == [None]
    assert systems.channel_returns == {"5001": ["approved", "label 9400RET1", "closed"]}
    # 2 of 4 bolts: 37.00 + tax 3.06 (6.11 x 2/4); 2 of 2 nuts: 19.50 + tax 1.61.
    (refund,) = systems.refunds.values()
    assert list(systems.refunds) == [REFUND_KEY]
    assert refund.total == usd("61.17")
    assert [(ln.line_id, ln.quantity, ln.amount) for ln in refund.lines] == [
        ("L1", 2, usd("40.06")),
        ("L2", 2, usd("21.11")),
    ]
    assert systems.credits[CREDIT_KEY].total == refund.total
    assert systems.credit_adjustments[CREDIT_KEY] == (usd("4.67"), usd("0.00"))
    state = result.state
    assert steps(state) == [
        "validate", "approve_on_channel", "authorize", "buy_label", "send_label", "create_wms_return", "restock",
        "receive_in_erp", "await_receipt", "credit", "refund", "close",
    ]  # fmt: skip
    assert state.refund_total == state.erp_credit_total == usd("61.17")
    assert state.lines_received == {BOLT: 2, NUT: 2} and state.lines_damaged == {}
    assert state.ids.erp_return_authorization_id == "RA-1" and state.ids.channel_refund_id == "RF-1"
    assert state.ids.erp_customer_id == "2001" and state.ids.tracking_number == "9400RET1"
    assert not state.needs_attention and state.compensations_done == []


async def test_a_return_sets_its_search_attributes(time_skipping: WorkflowEnvironment) -> None:
    async with running_return(time_skipping) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        await saga.handle.result()
        described = await saga.handle.describe()

    attributes = described.typed_search_attributes
    assert attributes.get(RETURN_STATUS) == "COMPLETED"
    assert attributes.get(SearchAttributeKey.for_keyword("Channel")) == "shopify"
    assert attributes.get(SearchAttributeKey.for_keyword("CustomerId")) == "2001"
    assert attributes.get(SearchAttributeKey.for_bool("NeedsAttention")) is False


async def test_a_partial_receipt_is_refunded_after_the_grace_period_and_the_rest_closed(
    time_skipping: WorkflowEnvironment,
) -> None:
    policy = ReturnPolicy(partial_receipt_grace=timedelta(days=3))
    async with running_return(time_skipping, request=return_request(lines={BOLT: 3}), policy=policy) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 1})
        await saga.until(lambda s: s.status is ReturnStatus.PARTIALLY_RECEIVED)
        result = await saga.handle.result()  # waiting on the result lets the server skip the 3 days

    assert result.status is ReturnStatus.COMPLETED
    ra = saga.systems.authorizations[RA_KEY]
    assert ra.received == ra.credited == {BOLT: 1} and ra.closed
    (refund,) = saga.systems.refunds.values()
    assert [(ln.sku, ln.quantity) for ln in refund.lines] == [(BOLT, 1)]
    assert refund.total == usd("20.03")  # 18.50 + 6.11 / 4 (1.5275 -> 1.53)
    assert result.state.lines_received == {BOLT: 1} and result.state.lines_requested == {BOLT: 3}
    assert "rest of the return authorization closed" in [s.detail for s in result.state.steps_done]
    at = {s.step: datetime.fromisoformat(s.at) for s in result.state.steps_done}
    assert timedelta(days=3) <= at["refund"] - at["receive_in_erp"] < timedelta(days=3, minutes=1)


async def test_by_default_a_partial_receipt_is_final_and_refunded_at_once(time_skipping: WorkflowEnvironment) -> None:
    async with running_return(time_skipping, request=return_request(lines={BOLT: 3})) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        result = await saga.handle.result()
    assert result.status is ReturnStatus.COMPLETED
    assert result.state.lines_received == {BOLT: 2}
    assert saga.systems.authorizations[RA_KEY].closed
    # Settled on the receipt, not at the 30-day deadline: no wait for units that will not come.
    at = {s.step: datetime.fromisoformat(s.at) for s in result.state.steps_done}
    assert at["refund"] - at["receive_in_erp"] < timedelta(minutes=1)


async def test_several_receipts_are_booked_one_by_one_and_a_repeated_one_is_ignored(
    time_skipping: WorkflowEnvironment,
) -> None:
    policy = ReturnPolicy(partial_receipt_grace=timedelta(days=2))
    async with running_return(time_skipping, request=return_request(lines={BOLT: 2, NUT: 1}), policy=policy) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 1})
        await saga.until(lambda s: s.lines_received == {BOLT: 1})
        await saga.receive("RCPT-1", sellable={BOLT: 1})  # the webhook delivered twice
        await saga.receive("RCPT-2", sellable={BOLT: 1, NUT: 1})
        result = await saga.handle.result()

    assert result.status is ReturnStatus.COMPLETED
    assert saga.systems.restocked_receipts == ["RCPT-1", "RCPT-2"]
    assert saga.systems.authorizations[RA_KEY].received == {BOLT: 2, NUT: 1}
    assert len(saga.systems.item_receipts) == 2 and len(saga.systems.refunds) == 1
    assert result.state.receipt_ids == ["RCPT-1", "RCPT-2"]


async def test_two_returns_against_one_order_are_each_held_to_what_is_left(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeReturnSystems()
    async with running_return(time_skipping, systems, request=return_request("5001", {BOLT: 3})) as first:
        await first.awaiting()
        await first.receive("RCPT-1", sellable={BOLT: 3})
        assert (await first.handle.result()).status is ReturnStatus.COMPLETED
    async with running_return(time_skipping, systems, request=return_request("5002", {BOLT: 2})) as too_many:
        refused = await too_many.handle.result()
    async with running_return(time_skipping, systems, request=return_request("5003", {BOLT: 1, NUT: 2})) as second:
        await second.awaiting()
        await second.receive("RCPT-2", sellable={BOLT: 1, NUT: 2})
        assert (await second.handle.result()).status is ReturnStatus.COMPLETED

    assert refused.status is ReturnStatus.REFUSED
    assert refused.state.refusal_reasons == [f"{BOLT}: 2 requested but 1 returnable (4 shipped, 3 already returned)"]
    assert [ra.lines for ra in systems.authorizations.values()] == [{BOLT: 3}, {BOLT: 1, NUT: 2}]
    assert sorted(systems.refunds) == [return_step_key("return:shopify:5001", "refund"),
                                       return_step_key("return:shopify:5003", "refund")]  # fmt: skip
    assert systems.channel_returns["5002"] == ["cancelled"]


async def test_a_return_over_the_shipped_quantity_is_refused_with_the_reason(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeReturnSystems(shipped={"order:shopify:1042": {BOLT: 3, NUT: 0}})
    request = return_request(lines={BOLT: 4, NUT: 1, "WASH-M8-S": 1})
    async with running_return(time_skipping, systems, request=request) as saga:
        result = await saga.handle.result()

    assert result.status is ReturnStatus.REFUSED
    assert result.state.refusal_reasons == [
        f"{BOLT}: 4 requested but 3 returnable (3 shipped, 0 already returned)",
        f"{NUT}: 1 requested but 0 returnable (0 shipped, 0 already returned)",
        "WASH-M8-S is not on order order:shopify:1042",
    ]
    assert systems.authorizations == {} and systems.labels == {} and systems.refunds == {}
    # The customer's request is declined on the channel, never approved.
    assert systems.channel_returns == {"5001": ["cancelled"]}
    assert steps(result.state) == ["validate", "decline_on_channel"]


async def test_a_return_outside_the_window_is_refused_with_the_reason(time_skipping: WorkflowEnvironment) -> None:
    late = return_request(requested_at=SHIPPED_AT + timedelta(days=45))
    async with running_return(time_skipping, request=late) as saga:
        result = await saga.handle.result()

    assert result.status is ReturnStatus.REFUSED
    assert result.state.refusal_reasons == [
        "requested 45 days after the order shipped on 2026-11-02; the return window is 30 days"
    ]
    assert saga.systems.authorizations == {}


async def test_a_longer_window_from_the_policy_accepts_the_same_late_return(
    time_skipping: WorkflowEnvironment,
) -> None:
    late = return_request(requested_at=SHIPPED_AT + timedelta(days=45))
    async with running_return(time_skipping, request=late, policy=ReturnPolicy(window_days=60)) as saga:
        await saga.awaiting()
        await saga.handle.execute_update(ReturnToRefund.request_cancel, CancelRequest(reason="test over"))
        result = await saga.handle.result()
    assert result.status is ReturnStatus.CANCELLED
    assert result.state.refusal_reasons == []


async def test_a_return_for_an_order_the_channel_does_not_have_is_refused(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_return(time_skipping, request=return_request(order_id="999")) as saga:
        result = await saga.handle.result()
    assert result.status is ReturnStatus.REFUSED
    assert result.state.refusal_reasons == ["order order:shopify:999 is not on shopify"]
    assert saga.systems.calls == ["load_channel_order", "cancel_channel_return"]


async def test_nothing_received_by_the_deadline_expires_the_return_and_undoes_it(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_return(time_skipping) as saga:
        state = await saga.until(lambda s: s.status is ReturnStatus.AWAITING_RECEIPT)
        assert state.receipt_deadline is not None
        result = await saga.handle.result()  # the server skips the 30 days

    assert result.status is ReturnStatus.EXPIRED
    assert "nothing received within 30 days" in (result.state.cancel_reason or "")
    systems = saga.systems
    assert systems.compensations() == [*ALL_UNDOS, "cancel_channel_return"]
    assert systems.labels == {REFERENCE: "refunded"}
    assert systems.wms_returns == {REFERENCE: "cancelled"}
    assert systems.authorizations[RA_KEY].closed and systems.authorizations[RA_KEY].received == {}
    assert systems.channel_returns["5001"][-1] == "cancelled"
    assert systems.refunds == {} and systems.credits == {}
    assert [c.step for c in result.state.compensations_done] == [
        "cancel_wms_return", "void_return_label", "close_return_authorization", "cancel_return_on_channel",
    ]  # fmt: skip


async def test_cancel_before_receipt_undoes_every_step_in_reverse(time_skipping: WorkflowEnvironment) -> None:
    async with running_return(time_skipping) as saga:
        await saga.awaiting()
        outcome = await saga.handle.execute_update(
            ReturnToRefund.request_cancel, CancelRequest(reason="customer kept it", requested_by="ops")
        )
        assert "cancel_wms_return, void_return_label, close_return_authorization" in outcome.message
        result = await saga.handle.result()

    assert result.status is ReturnStatus.CANCELLED
    assert saga.systems.compensations() == [*ALL_UNDOS, "cancel_channel_return"]
    assert saga.systems.labels == {REFERENCE: "refunded"} and saga.systems.refunds == {}


async def test_a_cancel_from_the_channel_is_not_sent_back_to_the_channel(time_skipping: WorkflowEnvironment) -> None:
    async with running_return(time_skipping) as saga:
        await saga.awaiting()
        await saga.handle.signal(
            ReturnToRefund.on_cancel, CancelRequest(reason="customer cancelled", source=CancelSource.CHANNEL)
        )
        result = await saga.handle.result()
    assert result.status is ReturnStatus.CANCELLED
    assert saga.systems.compensations() == ALL_UNDOS
    assert saga.systems.channel_returns["5001"] == ["approved", "label 9400RET1"]


async def test_cancel_after_goods_arrived_is_refused_with_the_reason(time_skipping: WorkflowEnvironment) -> None:
    policy = ReturnPolicy(partial_receipt_grace=timedelta(days=2))
    async with running_return(time_skipping, request=return_request(lines={BOLT: 2}), policy=policy) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 1})
        await saga.until(lambda s: s.status is ReturnStatus.PARTIALLY_RECEIVED)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(ReturnToRefund.request_cancel, CancelRequest(reason="too late"))
        assert "has goods back in the warehouse; it continues to a refund" in str(refused.value.cause)
        await saga.receive("RCPT-2", sellable={BOLT: 1})
        result = await saga.handle.result()
    assert result.status is ReturnStatus.COMPLETED
    assert saga.systems.compensations() == []


async def test_damaged_units_are_written_off_not_restocked_and_still_refunded(
    time_skipping: WorkflowEnvironment,
) -> None:
    policy = ReturnPolicy(write_off_location_id="WO-9")
    async with running_return(time_skipping, request=return_request(lines={BOLT: 2, NUT: 1}), policy=policy) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 1}, damaged={BOLT: 1, NUT: 1})
        result = await saga.handle.result()

    assert result.status is ReturnStatus.COMPLETED
    systems = saga.systems
    assert systems.restocked == {BOLT: 1}
    # Only what went back on the shelf is for sale again: the channels hear of that SKU alone.
    assert systems.availability == [[BOLT]]
    assert list(systems.item_receipts.values()) == [
        (None, {BOLT: 1}),
        ("WO-9", {BOLT: 1, NUT: 1}),
    ]
    assert result.state.lines_damaged == {BOLT: 1, NUT: 1}
    assert result.state.lines_received == {BOLT: 2, NUT: 1}
    (refund,) = systems.refunds.values()
    assert refund.total == systems.credits[CREDIT_KEY].total == usd("50.61")  # 37.00 + 9.75, tax 3.06 + 0.80


async def test_a_restocking_fee_is_kept_from_the_refund_and_the_erp_credit_alike(
    time_skipping: WorkflowEnvironment,
) -> None:
    policy = ReturnPolicy(restocking_fee_percent=Decimal(15))
    async with running_return(time_skipping, policy=policy) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        result = await saga.handle.result()

    (refund,) = saga.systems.refunds.values()
    # 37.00 merchandise + 3.06 tax - 5.55 fee (15% of 37.00).
    assert refund.total == usd("34.51")
    assert saga.systems.credit_adjustments[CREDIT_KEY] == (usd("3.06"), usd("5.55"))
    assert saga.systems.credits[CREDIT_KEY].total == refund.total
    assert result.state.restocking_fee == usd("5.55") and not result.state.needs_attention


async def test_a_return_an_operator_started_refunds_without_touching_a_channel_return(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_return(time_skipping, origin=ReturnOrigin.OPERATOR) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        result = await saga.handle.result()
    assert result.status is ReturnStatus.COMPLETED
    assert saga.systems.channel_returns == {}
    assert len(saga.systems.refunds) == 1


STEP_FAILURES = [
    # (failing activity, step it parks at, undo activities the operator's cancel must run)
    ("load_channel_order", "validate", []),
    ("load_erp_order_for_return", "validate", []),
    ("load_warehouse_order_for_return", "validate", []),
    ("approve_channel_return", "approve_on_channel", []),
    ("create_return_authorization", "authorize", ["close_return_authorization"]),
    ("buy_return_label", "buy_label", ["void_return_label", "close_return_authorization"]),
    ("send_return_label", "send_label", ["void_return_label", "close_return_authorization"]),
    ("create_wms_return", "create_wms_return", ALL_UNDOS),
]  # fmt: skip


@pytest.mark.parametrize(("failing", "step", "undo"), STEP_FAILURES, ids=[f[0] for f in STEP_FAILURES])
async def test_a_permanent_failure_before_receipt_parks_and_an_operator_cancel_undoes_what_was_done(
    time_skipping: WorkflowEnvironment, failing: str, step: str, undo: list[str]
) -> None:
    systems = FakeReturnSystems(failures={failing: -1})
    async with running_return(time_skipping, systems) as saga:
        state = await saga.until(lambda s: s.needs_attention)
        assert state.attention_step == step
        assert f"{failing} rejected by the test" in (state.attention_reason or "")

        outcome = await saga.handle.execute_update(
            ReturnToRefund.request_cancel, CancelRequest(reason="bad data", requested_by="ops")
        )
        assert outcome.accepted
        result = await saga.handle.result()

    assert result.status is ReturnStatus.CANCELLED
    assert systems.compensations() == [*undo, "cancel_channel_return"]
    assert "bought" not in systems.labels.values() and "awaiting" not in systems.wms_returns.values()
    assert all(ra.closed for ra in systems.authorizations.values())
    assert systems.refunds == {} and systems.channel_returns["5001"][-1] == "cancelled"
    assert [c.step for c in result.state.compensations_done] == [*undo, "cancel_return_on_channel"]
    assert not result.state.needs_attention


AFTER_RECEIPT_FAILURES = ["restock_return", "receive_return_in_erp", "issue_return_credit", "refund_on_channel",
                          "close_channel_return"]  # fmt: skip


@pytest.mark.parametrize("failing", AFTER_RECEIPT_FAILURES)
async def test_after_receipt_a_parked_step_cannot_be_cancelled_but_can_be_retried(
    time_skipping: WorkflowEnvironment, failing: str
) -> None:
    systems = FakeReturnSystems(failures={failing: 1})
    async with running_return(time_skipping, systems) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        await saga.until(lambda s: s.needs_attention)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(ReturnToRefund.request_cancel, CancelRequest(reason="too late"))
        assert "continues to a refund" in str(refused.value.cause)

        outcome = await saga.handle.execute_update(ReturnToRefund.request_retry, OperatorCommand(requested_by="ops"))
        assert outcome.accepted
        result = await saga.handle.result()

    assert result.status is ReturnStatus.COMPLETED
    assert systems.calls.count(failing) == 2
    assert systems.compensations() == []
    assert len(systems.refunds) == 1 and systems.restocked == {BOLT: 2}
    assert systems.authorizations[RA_KEY].credited == {BOLT: 2}


async def test_a_skippable_step_can_be_skipped_and_an_unskippable_one_cannot(
    time_skipping: WorkflowEnvironment,
) -> None:
    systems = FakeReturnSystems(failures={"buy_return_label": -1, "create_return_authorization": 1})
    async with running_return(time_skipping, systems) as saga:
        await saga.until(lambda s: s.attention_step == "authorize")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await saga.handle.execute_update(ReturnToRefund.request_skip, OperatorCommand(requested_by="ops"))
        assert "cannot be skipped" in str(refused.value.cause)
        await saga.handle.execute_update(ReturnToRefund.request_retry, OperatorCommand(requested_by="ops"))

        await saga.until(lambda s: s.attention_step == "buy_label")
        await saga.handle.execute_update(ReturnToRefund.request_skip, OperatorCommand(requested_by="ops"))
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 2})
        result = await saga.handle.result()

    assert result.status is ReturnStatus.COMPLETED
    assert systems.labels == {} and "send_return_label" not in systems.calls
    assert result.state.ids.tracking_number is None


async def test_a_failed_compensation_parks_until_an_operator_retries(time_skipping: WorkflowEnvironment) -> None:
    systems = FakeReturnSystems(failures={"void_return_label": 1})
    async with running_return(time_skipping, systems) as saga:
        await saga.awaiting()
        await saga.handle.execute_update(ReturnToRefund.request_cancel, CancelRequest(reason="ops"))
        state = await saga.until(lambda s: s.needs_attention)
        assert state.attention_step == "void_return_label" and "compensation failed" in (state.attention_reason or "")
        await saga.handle.execute_update(ReturnToRefund.request_retry, OperatorCommand(requested_by="ops"))
        result = await saga.handle.result()
    assert result.status is ReturnStatus.CANCELLED
    assert systems.labels == {REFERENCE: "refunded"}
    assert systems.compensations().count("void_return_label") == 2


async def test_a_temporal_cancel_before_receipt_compensates(time_skipping: WorkflowEnvironment) -> None:
    async with running_return(time_skipping) as saga:
        await saga.awaiting()
        await saga.handle.cancel()
        result = await saga.handle.result()
    assert result.status is ReturnStatus.CANCELLED
    assert saga.systems.compensations()[0] == "cancel_wms_return"


async def test_units_not_on_the_return_raise_attention_but_do_not_stop_the_refund(
    time_skipping: WorkflowEnvironment,
) -> None:
    async with running_return(time_skipping) as saga:
        await saga.awaiting()
        await saga.receive("RCPT-1", sellable={BOLT: 3, NUT: 1})
        result = await saga.handle.result()
    assert result.status is ReturnStatus.COMPLETED
    assert result.state.needs_attention
    assert "not expected on this return: 1 x BOLT-M8-S, 1 x NUT-M8-M" in (result.state.attention_reason or "")
    assert saga.systems.authorizations[RA_KEY].received == {BOLT: 2}
    (refund,) = saga.systems.refunds.values()
    assert [(ln.sku, ln.quantity) for ln in refund.lines] == [(BOLT, 2)]
