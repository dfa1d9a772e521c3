"""Order to cash and return to refund on Amazon, against the sandbox SP-API: confirm, cancel and refund by feed."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from integration.test_amazon_contract import order_state, place_order, plentiful_skus, shipment
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from orderflow.activities.channel import ChannelActivities
from orderflow.activities.returns import ReturnChannelActivities
from orderflow.adapters.amazon import AmazonClient
from orderflow.canonical import Channel
from orderflow.canonical.money import Money
from orderflow.canonical.return_saga import RefundOnChannelInput
from orderflow.canonical.returns import Refund, RefundLine
from orderflow.canonical.saga import CancelOnChannelInput, ConfirmShipmentInput
from orderflow.settings import AmazonSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def amazon(http: httpx.AsyncClient, sandbox_url: str) -> AmazonClient:
    """The Amazon adapter on the sandbox."""
    settings = AmazonSettings(
        base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
    )
    return AmazonClient(http, settings)


@pytest.fixture
def channels(amazon: AmazonClient) -> ChannelActivities:
    """The channel activities with only Amazon configured."""
    return ChannelActivities({Channel.AMAZON: amazon})


async def test_a_shipment_is_confirmed_on_amazon_once_even_when_the_step_is_repeated(
    env: ActivityEnvironment, channels: ChannelActivities, amazon: AmazonClient, sandbox: httpx.AsyncClient
) -> None:
    sku, other = plentiful_skus(2)
    placed = await place_order(sandbox, [(sku, 2), (other, 1)])
    order = await amazon.get_order(placed["orderId"])
    parcel = shipment("S1", [(sku, 2), (other, 1)])
    step = ConfirmShipmentInput(order=order, shipment=parcel, erp_order_id="1", erp_external_id="OF-amazon-1")

    first = await env.run(channels.confirm_shipment_on_channel, step)
    again = await env.run(channels.confirm_shipment_on_channel, step)

    assert order.channel is Channel.AMAZON and order.key == f"order:amazon:{placed['orderId']}"
    assert first.channel_fulfillment_id == again.channel_fulfillment_id == "S1"
    state = await order_state(sandbox, placed["orderId"])
    assert state["status"] == "SHIPPED"
    assert len(state["shipments"]) == 1, state["shipments"]


async def test_a_cancel_from_orderflow_goes_to_amazon_as_one_acknowledgement_feed(
    env: ActivityEnvironment, channels: ChannelActivities, amazon: AmazonClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)])
    order = await amazon.get_order(placed["orderId"])
    step = CancelOnChannelInput(order=order, reason="credit refused")

    first = await env.run(channels.cancel_on_channel, step)
    again = await env.run(channels.cancel_on_channel, step)
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")

    assert first.cancelled and first.detail == again.detail and "feed" in (first.detail or "")
    assert (await order_state(sandbox, placed["orderId"]))["status"] == "CANCELLED"
    feeds = (await sandbox.get("/sandbox/state/amazon")).json()["feeds"]
    acknowledgements = [f for f in feeds if f["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"]
    assert len(acknowledgements) == 1


async def test_a_return_is_refunded_on_amazon_through_one_adjustment_feed_once_amazon_has_processed_it(
    env: ActivityEnvironment, http: httpx.AsyncClient, sandbox_url: str, sandbox: httpx.AsyncClient
) -> None:
    settings = AmazonSettings(
        base_url=f"{sandbox_url}/amazon",
        lwa_url=f"{sandbox_url}/amazon/auth/o2/token",
        timeout_seconds=5,
        # No waiting inside the call: while the feed is queued the activity fails, retryable.
        max_throttle_wait_seconds=0,
    )
    amazon = AmazonClient(http, settings)
    returns = ReturnChannelActivities({Channel.AMAZON: amazon})
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 2)])
    order = await amazon.get_order(placed["orderId"])
    line = order.lines[0]
    amount = Money(amount=(line.net + line.tax_total).amount / 2, currency="USD").rounded()
    refund = Refund(
        order_key=order.key,
        lines=[RefundLine(line_id=line.line_id, sku=sku, quantity=1, amount=amount)],
        total=amount,
        reason="return",
    )
    step = RefundOnChannelInput(
        channel=Channel.AMAZON,
        channel_order_id=placed["orderId"],
        refund=refund,
        idempotency_key="OFR-amazon-ops-1-refund",
    )

    with pytest.raises(ApplicationError) as queued:
        await env.run(returns.refund_on_channel, step)
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")
    done = await env.run(returns.refund_on_channel, step)

    assert not queued.value.non_retryable  # Temporal retries it until Amazon has processed the feed
    assert done.refund.amount == amount
    state = (await sandbox.get("/sandbox/state/amazon")).json()
    adjustments = [f for f in state["feeds"] if f["feedType"] == "POST_PAYMENT_ADJUSTMENT_DATA"]
    assert [f["feedId"] for f in adjustments] == [done.refund.channel_refund_id]
    (refunded,) = (await order_state(sandbox, placed["orderId"]))["refunds"]
    assert Decimal(refunded["amount"]) == amount.amount
