"""The order saga's channel steps on Amazon, against the sandbox SP-API: confirm a shipment, cancel through a feed."""

from __future__ import annotations

import httpx
import pytest
from integration.test_amazon_contract import order_state, place_order, plentiful_skus, shipment
from temporalio.testing import ActivityEnvironment

from orderflow.activities.channel import ChannelActivities
from orderflow.adapters.amazon import AmazonClient
from orderflow.canonical import Channel
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
