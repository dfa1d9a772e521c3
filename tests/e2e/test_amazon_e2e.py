"""Amazon end to end: orders found by the poller, through the real worker on the dev server, to their ends.

Amazon sends no order webhooks, so orders come in through the channel order poller, run the way
production runs it: the Temporal Schedule `orderflow amazon schedule create` builds
(`poller_schedule`), triggered as `orderflow amazon schedule trigger` does. A triggered run's
result is the next run's last-completion result, so the cursor travels between polls exactly as
between scheduled ticks; starting `ChannelOrderPoller` runs by hand would have to pass the cursor
itself and would test less. The schedule is created paused with an hour between ticks, so only
the test's triggers poll. Its input differs from the CLI's in three knobs only: a 1 s search lag
(Amazon's rule is 2 minutes; the sandbox does not enforce it, and a test cannot wait 2 minutes),
a page of 5 orders so a handful of orders spans pages, and the test's own schedule id.

Everything else is real: the worker with the real activities and adapters, the webhook service
for the warehouse's and the carrier's webhooks, and the sandbox Amazon with its rate limits and
feeds moving on its clock. The assertions read the sandbox's state and the sagas' results.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from contracts.returns_sandbox import records_with_external_id
from contracts.wms_sandbox import vendor_client
from support.amazon import AmazonStack, SpApiCalls, create_poller_schedule
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from orderflow.adapters.amazon import USAGE_PLANS
from orderflow.adapters.wms import RETURN_RECEIPT_TOPIC
from orderflow.canonical.channel_polling import SkippedOrder, poller_schedule_id
from orderflow.canonical.order import Channel
from orderflow.canonical.return_saga import ReturnStatus, ReturnToRefundResult, return_key, return_step_key
from orderflow.canonical.saga import OrderStatus, order_reference
from orderflow.cli import app as cli_app
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway
from orderflow.worker import HTTP_LIMITS, build_worker
from orderflow.workflows.return_to_refund import ReturnToRefund

pytestmark = pytest.mark.integration

BOLT, NUT = "BOLT-M8-S", "NUT-M8-M"
LINES = [(BOLT, 2), (NUT, 1)]
SEARCH_LAG = timedelta(seconds=1)
PAGE_SIZE = 5
BUYER_REASON = "Buyer changed their mind"


@pytest.fixture
async def stack(
    dev_server: WorkflowEnvironment, sandbox: httpx.AsyncClient, settings: Settings
) -> AsyncIterator[AmazonStack]:
    """Worker, webhook service and the poller's schedule on a task queue of this test's own."""
    queue = f"amazon-e2e-{uuid.uuid4()}"
    client = dev_server.client
    target = client.service_client.config.target_host
    service = create_app(settings, temporal=TemporalGateway(target, task_queue=queue))
    sp_api = SpApiCalls()
    with BackgroundServer(service) as hooks:
        subscriptions = {"wms": ["order.shipped", RETURN_RECEIPT_TOPIC], "carrier": ["tracker.updated"]}
        for system, topics in subscriptions.items():
            response = await sandbox.post(
                f"/sandbox/webhooks/subscriptions/{system}",
                json={"topics": topics, "url": f"{hooks.url}/webhooks/{system}"},
            )
            response.raise_for_status()
        (await sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 0.3})).raise_for_status()
        marketplace = settings.amazon.marketplace_ids[0]
        schedule = await create_poller_schedule(
            client,
            schedule_id=f"{poller_schedule_id(Channel.AMAZON, marketplace)}:{queue}",
            marketplace=marketplace,
            task_queue=queue,
            search_lag=SEARCH_LAG,
            page_size=PAGE_SIZE,
        )
        try:
            # The worker's own HTTP client, as `http_client()` builds it, with hooks that only watch.
            async with (
                httpx.AsyncClient(limits=HTTP_LIMITS, event_hooks=sp_api.hooks()) as http,
                build_worker(client, settings, http, task_queue=queue),
            ):
                yield AmazonStack(
                    client=client,
                    sandbox=sandbox,
                    settings=settings,
                    task_queue=queue,
                    schedule=schedule,
                    sp_api=sp_api,
                )
        finally:
            await schedule.delete()


def records(netsuite: dict[str, Any], record_type: str) -> list[dict[str, Any]]:
    """The ERP's records of one type."""
    found: list[dict[str, Any]] = netsuite["records"].get(record_type, [])
    return found if isinstance(found, list) else list(found.values())


async def assert_shipped_on_amazon_and_booked(stack: AmazonStack, order_id: str) -> None:
    """Amazon holds one package with the label's tracking number; one sales order and one invoice in the ERP."""
    reference = order_reference(stack.key(order_id))
    carrier = await stack.state("carrier")
    shipments = [s for s in carrier["shipments"] if s.get("reference") == reference]
    bought = [s for s in shipments if s.get("selected_rate")]
    assert len(shipments) == 1 and len(bought) == 1, shipments

    amazon = await stack.amazon_order(order_id)
    assert amazon["status"] == "SHIPPED", amazon
    assert [p["trackingNumber"] for p in amazon["shipments"]] == [bought[0]["tracking_code"]]
    assert [i["quantityShipped"] for i in amazon["items"]] == [i["quantityOrdered"] for i in amazon["items"]]

    netsuite = await stack.state("netsuite")
    (sales_order,) = [r for r in records(netsuite, "salesOrder") if r.get("externalId") == reference]
    invoices = [r for r in records(netsuite, "invoice") if str(r["createdFrom"]["id"]) == str(sales_order["id"])]
    assert len(invoices) == 1, invoices
    wms = await stack.state("wms")
    assert [r["status"] for r in wms["reservations"] if r["reference_id"] == reference] == ["Consumed"]


async def test_amazon_mfn_orders_complete_with_the_shipment_confirmed_on_amazon_and_afn_orders_are_skipped(
    stack: AmazonStack,
) -> None:
    mfn = [await stack.place_order(LINES), await stack.place_order([(NUT, 3)])]
    afn = await stack.place_order(LINES, fulfillment_channel="AFN")
    await stack.settled(*mfn, afn, lag=SEARCH_LAG)

    polled = await stack.poll()

    keys = [stack.key(o["orderId"]) for o in mfn]
    assert sorted(polled.started) == sorted(keys)
    assert polled.skipped == [SkippedOrder(channel_order_id=afn["orderId"], reason="fulfilled by the marketplace")]
    assert polled.duplicates == [] and polled.failed == []
    results = await asyncio.gather(*(stack.finish(key) for key in keys))
    assert [r.status for r in results] == [OrderStatus.COMPLETED] * 2, [r.state.model_dump_json() for r in results]
    for order in mfn:
        await assert_shipped_on_amazon_and_booked(stack, order["orderId"])
    # The Amazon-fulfilled order is Amazon's to ship: no saga, nothing in our warehouse or on Amazon.
    assert not await stack.has_saga(stack.key(afn["orderId"]))
    untouched = await stack.amazon_order(afn["orderId"])
    assert (untouched["status"], untouched["shipments"]) == ("UNSHIPPED", [])
    # Stock is shared: after the reservations, Amazon may sell no more than the warehouse can still ship.
    stock = (await stack.state("wms"))["stock"]
    listings = (await stack.state("amazon"))["listings"]
    for sku in {sku for sku, _ in LINES} | {NUT}:
        assert listings[sku] == sum(int(row["fulfillable"]) for row in stock if row["sku"] == sku), sku

    # The next poll's overlap returns both orders again (shipped now): nothing started twice.
    again = await stack.poll()
    assert again.started == [] and again.duplicates == [] and again.failed == []
    assert [await stack.runs(key) for key in keys] == [1, 1]


def acknowledgement_feeds(amazon: dict[str, Any]) -> list[dict[str, Any]]:
    """The order acknowledgement feeds Amazon received (how a seller cancels an order)."""
    return [f for f in amazon["feeds"] if f["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"]


async def test_a_buyer_cancellation_before_shipment_compensates_and_cancels_the_order_on_amazon(
    stack: AmazonStack,
) -> None:
    # The warehouse holds the order (it would ship in an hour), so the buyer's request comes before shipment.
    (await stack.sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": 3600})).raise_for_status()
    stock_before = (await stack.state("wms"))["stock"]
    placed = await stack.place_order(LINES)
    order_id, key = placed["orderId"], stack.key(placed["orderId"])
    reference = order_reference(key)
    await stack.settled(placed, lag=SEARCH_LAG)
    assert (await stack.poll()).started == [key]
    released = await stack.until_status(key, {OrderStatus.RELEASED})
    assert released.ids.erp_order_id is not None

    request = await stack.buyer_cancels(order_id, BUYER_REASON)
    await stack.settled(request, lag=SEARCH_LAG)
    polled = await stack.poll()

    assert polled.cancels_signalled == [key] and polled.started == []
    result = await stack.finish(key)
    assert result.status is OrderStatus.CANCELLED, result.state.model_dump_json()
    # Every step undone in reverse; the buyer's request leaves the decision to the seller, so the
    # saga also cancels on Amazon (through the acknowledgement feed).
    undone = [c.step for c in result.state.compensations_done]
    assert undone == ["cancel_fulfillment_order", "void_label", "close_sales_order", "release_allocation",
                      "cancel_on_channel"], result.state.model_dump_json()  # fmt: skip
    # The warehouse order (which had taken over the reservation) is cancelled and its stock is free again.
    wms = await stack.state("wms")
    assert [r["status"] for r in wms["reservations"] if r["reference_id"] == reference] == ["Consumed"]
    assert [o["status"] for o in wms["orders"] if o["reference_id"] == reference] == ["Cancelled"]
    assert wms["stock"] == stock_before
    netsuite = await stack.state("netsuite")
    (sales_order,) = [r for r in records(netsuite, "salesOrder") if r.get("externalId") == reference]
    assert sales_order["status"]["refName"] == "Closed", sales_order["status"]
    (shipment,) = [s for s in (await stack.state("carrier"))["shipments"] if s.get("reference") == reference]
    assert shipment["refund_status"] in ("submitted", "refunded")
    cancelled = await stack.until_amazon_order(order_id, lambda o: o["status"] == "CANCELLED")
    assert cancelled["cancelledBy"] == "MERCHANT" and cancelled["shipments"] == []
    (feed,) = acknowledgement_feeds(await stack.state("amazon"))
    assert feed["effects"] == [f"cancelled {order_id} (buyer request acknowledged)"] and feed["errors"] == []


async def test_a_buyer_cancel_request_on_an_order_never_polled_before_ends_cancelled_on_amazon(
    stack: AmazonStack,
) -> None:
    # Placed and asked to be cancelled before any poll saw it: the first change seen is the request.
    placed = await stack.place_order(LINES, buyer_cancel_reason=BUYER_REASON)
    order_id, key = placed["orderId"], stack.key(placed["orderId"])
    await stack.settled(placed, lag=SEARCH_LAG)

    polled = await stack.poll()

    assert polled.cancels_signalled == [key], polled.model_dump_json()
    result = await stack.finish(key)
    assert result.status is OrderStatus.CANCELLED, result.state.model_dump_json()
    # The cancel came with the start, so the saga did nothing but cancel on Amazon.
    assert result.state.steps_done == [], result.state.model_dump_json()
    assert [c.step for c in result.state.compensations_done] == ["cancel_on_channel"]
    reference = order_reference(key)
    wms = await stack.state("wms")
    assert [r for r in wms["reservations"] if r["reference_id"] == reference] == []
    assert [o for o in wms["orders"] if o["reference_id"] == reference] == []
    assert [r for r in records(await stack.state("netsuite"), "salesOrder") if r.get("externalId") == reference] == []
    cancelled = await stack.until_amazon_order(order_id, lambda o: o["status"] == "CANCELLED")
    assert cancelled["cancelledBy"] == "MERCHANT"
    (feed,) = acknowledgement_feeds(await stack.state("amazon"))
    assert feed["effects"] == [f"cancelled {order_id} (buyer request acknowledged)"] and feed["errors"] == []
    assert await stack.runs(key) == 1


async def test_an_operators_return_of_a_completed_amazon_order_refunds_the_credit_memo_through_one_feed(
    stack: AmazonStack, dev_server: WorkflowEnvironment
) -> None:
    placed = await stack.place_order(LINES)
    order_id, key = placed["orderId"], stack.key(placed["orderId"])
    await stack.settled(placed, lag=SEARCH_LAG)
    assert (await stack.poll()).started == [key]
    assert (await stack.finish(key)).status is OrderStatus.COMPLETED

    # Amazon has no return object for a merchant-fulfilled order: an operator opens the return.
    return_id = f"ops-{uuid.uuid4().hex[:12]}"
    env = {"TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host, "USER": "ops-oncall"}
    argv = ["returns", "start", "--order", f"amazon:{order_id}", "--lines", f"{BOLT}:1,{NUT}:1",
            "--return-id", return_id, "--task-queue", stack.task_queue, "--reason", "arrived damaged"]  # fmt: skip
    started = await asyncio.to_thread(CliRunner().invoke, cli_app, argv, env=env)
    assert started.exit_code == 0, started.output
    rkey = return_key(Channel.AMAZON, return_id)
    handle = stack.client.get_workflow_handle(rkey, result_type=ReturnToRefundResult)
    for _ in range(300):
        state = await handle.query(ReturnToRefund.state)
        if state.status is ReturnStatus.AWAITING_RECEIPT or state.needs_attention:
            break
        await asyncio.sleep(0.1)
    assert state.status is ReturnStatus.AWAITING_RECEIPT, state.model_dump_json()
    assert state.ids.wms_return_id is not None

    # The warehouse opens the box; its `return.completed` webhook reaches the saga through the webhook service.
    async with vendor_client(stack.settings) as vendor:
        response = await vendor.post("/simulate/return", json={"return_id": state.ids.wms_return_id, "actions": [
            {"inventory_id": CATALOG_BY_SKU[sku].wms_inventory_id, "action": "Restock", "quantity": 1}
            for sku in (BOLT, NUT)
        ]})  # fmt: skip
        response.raise_for_status()
    result = await asyncio.wait_for(handle.result(), 60)

    assert result.status is ReturnStatus.COMPLETED, result.state.model_dump_json()
    assert "refund" in [s.step for s in result.state.steps_done], result.state.model_dump_json()
    erp = await stack.state("netsuite")
    (memo,) = records_with_external_id(erp, "creditMemo", return_step_key(rkey, "credit"))
    credited = Decimal(str(memo["total"]))
    amazon = await stack.state("amazon")
    (feed,) = [f for f in amazon["feeds"] if f["feedType"] == "POST_PAYMENT_ADJUSTMENT_DATA"]
    assert feed["processingStatus"] == "DONE" and feed["errors"] == []
    assert feed["effects"] == [f"refunded {credited} on {order_id}"]
    refunds = (await stack.amazon_order(order_id))["refunds"]
    assert {r["feedId"] for r in refunds} == {feed["feedId"]}
    assert sum(Decimal(r["amount"]) for r in refunds) == credited
    assert result.state.refund_total is not None and result.state.refund_total.amount == credited
    assert result.state.refund_total == result.state.erp_credit_total


async def test_every_order_is_started_once_across_a_throttled_period_and_an_amazon_outage(
    stack: AmazonStack,
) -> None:
    # Half of Amazon's documented rates and bursts. Sagas wait for a warehouse that never ships, so
    # only the poller's reads spend the budget: per order a getOrder, a restricted data token (burst
    # 5 at half, then one every 2 s) and a getOrder with it (burst 15 at half, then one every 4 s).
    # Six orders overrun the tokens' burst on the second page; more would only wait on getOrder.
    (await stack.sandbox.put("/amazon/sandbox/rate-scale", json={"scale": 0.5})).raise_for_status()
    (await stack.sandbox.put("/sandbox/demo", json={"wms_ship_after_seconds": None})).raise_for_status()
    first = [await stack.place_order([(NUT, 1)]) for _ in range(6)]
    afn = await stack.place_order([(NUT, 1)], fulfillment_channel="AFN")
    await stack.settled(*first, afn, lag=SEARCH_LAG)

    throttled = await stack.poll()

    first_keys = {stack.key(o["orderId"]) for o in first}
    assert sorted(throttled.started) == sorted(first_keys) and throttled.failed == []
    assert [s.channel_order_id for s in throttled.skipped] == [afn["orderId"]]
    assert throttled.pages == 2, "seven orders at five a page take two pages"
    amazon = await stack.state("amazon")
    assert sum(amazon["throttled"].values()) > 0, "no call was throttled; the test proved nothing"
    sandbox_429s = sorted(c["operation"] for c in amazon["calls"] if c["status"] == 429)
    assert sandbox_429s == sorted(c.operation for c in stack.sp_api.calls if c.status == 429)
    # The sandbox's log cannot tell a retry from another order's call of the same operation (the
    # poller reads a page's orders at once), so the worker's own requests say which call each was.
    # Every throttled call was sent again, and only after one token's refill at Amazon's documented
    # rate, or the adapter's longest in-call wait (past which Temporal's retry waits for it).
    retries = stack.sp_api.retries_after(429)
    assert len(retries) == len(sandbox_429s), "a throttled call was never sent again"
    for call, waited in retries:
        floor = 0.9 * min(1 / USAGE_PLANS[call.operation][0], stack.settings.amazon.max_throttle_wait_seconds)
        assert waited >= floor, f"{call.operation} retried {waited:.3f} s after its 429 (floor {floor:.3f} s)"

    # Amazon goes down (503 on every SP-API call) while more orders arrive and a poll runs.
    later = [await stack.place_order([(NUT, 1)]) for _ in range(2)]
    await stack.settled(*later, lag=SEARCH_LAG)
    outage = await stack.sandbox.post("/sandbox/faults", json={"system": "amazon", "kind": "error", "status": 503})
    outage.raise_for_status()
    during = await stack.trigger_poll()
    for _ in range(100):
        fired = [rule["fired"] for rule in (await stack.sandbox.get("/sandbox/faults")).json()]
        if fired[0] >= 2:
            break
        await asyncio.sleep(0.1)
    assert fired[0] >= 2, "the poll did not try Amazon again during the outage"
    # Mid-outage the poll waits, still running with no result (so no new cursor), and no new order has a saga.
    assert (await during.describe()).status is WorkflowExecutionStatus.RUNNING
    assert [await stack.has_saga(stack.key(o["orderId"])) for o in later] == [False, False]
    (await stack.sandbox.delete("/sandbox/faults")).raise_for_status()
    recovered = await asyncio.wait_for(during.result(), 60)

    later_keys = {stack.key(o["orderId"]) for o in later}
    assert sorted(recovered.started) == sorted(later_keys)
    assert recovered.duplicates == [] and recovered.failed == []
    # Its window (the overlap takes in every order so far) was read whole after the outage, and only
    # then did the cursor move: to the window's end, past every order in it.
    assert recovered.pages == 2
    assert recovered.cursor > throttled.cursor
    newest = max(datetime.fromisoformat(o["lastUpdatedTime"].replace("Z", "+00:00")) for o in later)
    assert recovered.cursor > newest
    # The poll waited out the outage with backoff: every refused search was sent again a second or more later.
    outage_retries = stack.sp_api.retries_after(503)
    assert outage_retries and all(waited >= 0.9 for _call, waited in outage_retries), outage_retries
    # A further poll finds everything handled, and each order has exactly one saga run.
    quiet = await stack.poll()
    assert quiet.started == [] and quiet.duplicates == [] and quiet.failed == []
    assert [await stack.runs(key) for key in sorted(first_keys | later_keys)] == [1] * 8
