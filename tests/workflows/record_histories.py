"""Record the stored histories that `test_replay.py` replays: `python tests/workflows/record_histories.py`.

Run it only when a workflow change is deliberately incompatible and guarded by `workflow.patched`
(then keep the old histories too, and add new ones). Each history is a real run on the
time-skipping server with the stand-in systems.

Generations, oldest first; a run records only the newest (older files are kept as they are, so
the sagas that began under them are still proven to replay):
- `order_to_cash_happy_path`, `order_to_cash_credit_hold_then_cancel`: before the order view.
- `..._with_order_view`: the `order-view` patch, a local activity at each transition.
- `..._with_partial_cancel`: the `partial-cancel` patch (a marker at the start), plus
  `order_to_cash_partly_shipped_then_cancelled`: one parcel shipped, the rest cancelled, the shipped part invoiced.
- `..._with_availability`: the `publish-availability` patch, availability published to the channels
  in the background after each reservation and release (`... record_histories.py orders` records only these).
- `..._with_credit_hold_guard`: the `credit-hold-refuses-retry` patch (a retry or skip during a credit hold is refused).

`order_to_cash_operator_*` and `return_to_refund_operator_retry` were recorded (by a one-off script, with
the stand-in systems failing on purpose) just before the sagas recorded who retried, skipped or
cancelled and why: retry and skip, an operator's cancel whose undo was retried, a return retried.
They prove those records did not change what a running saga does.

Return to refund (`return_to_refund_*`, recorded by `record_returns`; `... record_histories.py returns`
records only these): a return received in two boxes, one with damaged units, and a return
cancelled before anything came back; `..._with_availability`: the `publish-availability` patch
(restocked units published to the channels).

The channel order poller (`poller_*`, recorded by `record_poller`; `... record_histories.py poller`
records only these): a poll over two pages that starts sagas, skips a marketplace-fulfilled order
and signals a cancel; and a poll's first run that continued as new mid-search.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from fake_returns import BOLT, NUT, FakeReturnSystems, receipt, return_request
from fake_systems import FakeSystems, make_order, shipment_for
from support.temporal import start_time_skipping_server
from temporalio.worker import Worker

from orderflow.canonical import PaymentTerms
from orderflow.canonical.return_saga import CancelRequest as ReturnCancelRequest
from orderflow.canonical.return_saga import ReturnPolicy, ReturnReceived, ReturnStatus, ReturnToRefundInput
from orderflow.canonical.saga import (
    CancelRequest,
    CreditApproval,
    CreditDecision,
    OrderStatus,
    OrderToCashInput,
    ShipmentConfirmed,
)
from orderflow.temporal import initial_return_search_attributes, initial_search_attributes
from orderflow.workflows.order_to_cash import OrderToCash
from orderflow.workflows.return_to_refund import ReturnToRefund

HISTORIES = Path(__file__).parents[1] / "histories"
# The newest generation's suffix (see the docstring), of orders and of returns.
GENERATION = "_with_credit_hold_guard"
RETURN_GENERATION = "_with_availability"


async def wait_for_status(handle, status: OrderStatus) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if (await handle.query(OrderToCash.state)).status is status:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"never reached {status}")


async def record() -> None:
    env = await start_time_skipping_server()
    try:
        for scenario, terms in (
            ("order_to_cash_happy_path", False),
            ("order_to_cash_credit_hold_then_cancel", True),
            ("order_to_cash_partly_shipped_then_cancelled", False),
        ):
            name = scenario + GENERATION
            systems = FakeSystems(
                terms=PaymentTerms.TERMS if terms else PaymentTerms.PREPAID,
                credit=CreditDecision.HOLD if terms else CreditDecision.APPROVED,
            )
            queue = f"record-{uuid.uuid4()}"
            order = make_order(terms=terms)
            async with Worker(env.client, task_queue=queue, workflows=[OrderToCash], activities=systems.activities()):
                # Started as the webhook service starts sagas: with their first search attributes set.
                handle = await env.client.start_workflow(
                    OrderToCash.run,
                    OrderToCashInput(order=order),
                    id=f"{order.key}-{name}",
                    task_queue=queue,
                    search_attributes=initial_search_attributes(order),
                )
                if terms:
                    await wait_for_status(handle, OrderStatus.CREDIT_HOLD)
                    await handle.execute_update(OrderToCash.request_credit_approval, CreditApproval(approved_by="ops"))
                    await wait_for_status(handle, OrderStatus.RELEASED)
                    await handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="customer asked"))
                elif "partly_shipped" in scenario:
                    await wait_for_status(handle, OrderStatus.RELEASED)
                    parcel = shipment_for(order, "S1", lines={"BOLT-M8-S": 2})
                    await handle.signal(OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=parcel))
                    await wait_for_status(handle, OrderStatus.PARTIALLY_SHIPPED)
                    await handle.execute_update(OrderToCash.request_cancel, CancelRequest(reason="rest not wanted"))
                else:
                    await wait_for_status(handle, OrderStatus.RELEASED)
                    await handle.signal(
                        OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment_for(order))
                    )
                await handle.result()
                history = await handle.fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            markers = sum(1 for event in history.events if event.HasField("marker_recorded_event_attributes"))
            print(f"recorded {name}: {len(history.events)} events, {markers} markers, {len(systems.order_views)} views")
    finally:
        await env.shutdown()


async def wait_for_return_status(handle, status: ReturnStatus) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if (await handle.query(ReturnToRefund.state)).status is status:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"never reached {status}")


async def record_returns() -> None:
    """Record the return-to-refund histories: two receipts (one damaged) to a refund, and a cancel."""
    env = await start_time_skipping_server()
    try:
        for scenario in ("return_to_refund_two_receipts_one_damaged", "return_to_refund_cancelled_before_receipt"):
            name = scenario + RETURN_GENERATION
            systems = FakeReturnSystems()
            queue = f"record-{uuid.uuid4()}"
            request = return_request(lines={BOLT: 2, NUT: 1})
            policy = ReturnPolicy(write_off_location_id="WO-9", partial_receipt_grace=timedelta(days=2))
            start = ReturnToRefundInput(return_request=request, policy=policy)
            async with Worker(
                env.client, task_queue=queue, workflows=[ReturnToRefund], activities=systems.activities()
            ):
                handle = await env.client.start_workflow(
                    ReturnToRefund.run,
                    start,
                    id=f"{request.key}-{name}",
                    task_queue=queue,
                    search_attributes=initial_return_search_attributes(request),
                )
                await wait_for_return_status(handle, ReturnStatus.AWAITING_RECEIPT)
                if "cancelled" in name:
                    await handle.execute_update(ReturnToRefund.request_cancel, ReturnCancelRequest(reason="kept it"))
                else:
                    await handle.signal(
                        ReturnToRefund.on_return_received,
                        ReturnReceived(receipt=receipt("RET-1", "RCPT-1", sellable={BOLT: 1})),
                    )
                    await wait_for_return_status(handle, ReturnStatus.PARTIALLY_RECEIVED)
                    await handle.signal(
                        ReturnToRefund.on_return_received,
                        ReturnReceived(receipt=receipt("RET-1", "RCPT-2", sellable={BOLT: 1}, damaged={NUT: 1})),
                    )
                result = await handle.result()
                history = await handle.fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events, ended {result.status.value}")
    finally:
        await env.shutdown()


async def record_poller() -> None:
    """Record the channel order poller's histories: a two-page poll, and a run that continued as new."""
    from datetime import UTC, datetime

    from test_channel_order_poller import FakeChannel, poll_input

    from orderflow.canonical.channel_polling import ChannelOrderStatus, FulfilledBy
    from orderflow.workflows.amazon_orders import ChannelOrderPoller

    env = await start_time_skipping_server()
    try:
        for name, max_pages in (("poller_two_pages_cancel_and_marketplace_order", 10), ("poller_continued_as_new", 1)):
            now = datetime.now(UTC).replace(microsecond=0)
            channel = FakeChannel(sagas={"order:amazon:111-0000000-0000004"})
            channel.add("111-0000000-0000001", now - timedelta(minutes=40))
            channel.add("111-0000000-0000002", now - timedelta(minutes=30), fulfilled_by=FulfilledBy.MARKETPLACE)
            channel.add("111-0000000-0000003", now - timedelta(minutes=20))
            channel.add("111-0000000-0000004", now - timedelta(minutes=8), ChannelOrderStatus.CANCEL_REQUESTED)
            queue = f"record-{uuid.uuid4()}"
            async with Worker(
                env.client, task_queue=queue, workflows=[ChannelOrderPoller], activities=channel.activities()
            ):
                handle = await env.client.start_workflow(
                    ChannelOrderPoller.run,
                    poll_input(now - timedelta(hours=1), page_size=2, max_pages_per_run=max_pages),
                    id=f"poll:amazon:ATVPDKIKX0DER-{name}",
                    task_queue=queue,
                )
                await handle.result()
                first_run = env.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
                history = await first_run.fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())
            print(f"recorded {name}: {len(history.events)} events")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    if sys.argv[1:] == ["poller"]:
        asyncio.run(record_poller())
        sys.exit(0)
    if sys.argv[1:] != ["returns"]:
        asyncio.run(record())
    if sys.argv[1:] != ["orders"]:
        asyncio.run(record_returns())
