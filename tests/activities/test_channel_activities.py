"""Channel activities against the Shopify simulator: tracking back to the order, and cancelling it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.sample import shipment, state
from orderflow.activities import ChannelActivities
from orderflow.adapters.shopify import ShopifyClient
from orderflow.canonical import Order
from orderflow.canonical.saga import CancelOnChannelInput, ConfirmShipmentInput
from orderflow.sandbox.seed import CATALOG_BY_SKU

pytestmark = pytest.mark.integration

ORDER_CREATE = """mutation OrderCreate($order: OrderCreateOrderInput!) {
  orderCreate(order: $order) { order { legacyResourceId } userErrors { field message code } }
}"""


async def placed_order(shopify: ShopifyClient, lines: list[tuple[str, int]]) -> Order:
    """An order placed on the Shopify sandbox, read back in canonical form as the webhook would give it."""
    variables = {
        "order": {
            "email": "ada@example.com",
            "financialStatus": "PAID",
            "customer": {"toAssociate": {"id": "gid://shopify/Customer/207119551"}},
            "lineItems": [
                {"variantId": f"gid://shopify/ProductVariant/{CATALOG_BY_SKU[sku].shopify_variant_id}", "quantity": qty}
                for sku, qty in lines
            ],
            "shippingAddress": {"firstName": "Ada", "lastName": "Lovelace", "address1": "1 Main St",
                                "city": "Austin", "provinceCode": "TX", "zip": "78701", "countryCode": "US"},
        }
    }  # fmt: skip
    created = (await shopify.execute(ORDER_CREATE, variables))["orderCreate"]
    assert created["userErrors"] == []
    return await shopify.get_order(str(created["order"]["legacyResourceId"]))


def held(snapshot: dict[str, Any], order: Order) -> dict[str, Any]:
    """The order as the Shopify sandbox holds it."""
    return dict(next(o for o in snapshot["orders"] if str(o["id"]) == order.channel_order_id))


async def test_confirming_a_shipment_records_one_fulfillment_with_its_tracking(
    env: ActivityEnvironment, channels: ChannelActivities, shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    sale = await placed_order(shopify, [("BOLT-M8-S", 2), ("NUT-M8-S", 1)])
    parcel = shipment("800001", "9400100000000000000042", [("BOLT-M8-S", 2), ("NUT-M8-S", 1)])
    request = ConfirmShipmentInput(order=sale, shipment=parcel, erp_order_id="10001", erp_external_id="OF-x")

    first = await env.run(channels.confirm_shipment_on_channel, request)
    again = await env.run(channels.confirm_shipment_on_channel, request)

    assert again.channel_fulfillment_id == first.channel_fulfillment_id
    (fulfillment,) = held(await state(sandbox, "shopify"), sale)["fulfillments"]
    assert fulfillment["tracking_number"] == "9400100000000000000042"
    assert sorted((item["sku"], item["quantity"]) for item in fulfillment["line_items"]) == [
        ("BOLT-M8-S", 2),
        ("NUT-M8-S", 1),
    ]


async def test_cancelling_on_the_channel_cancels_the_order_and_a_repeat_is_success(
    env: ActivityEnvironment, channels: ChannelActivities, shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    sale = await placed_order(shopify, [("BOLT-M8-S", 1)])
    request = CancelOnChannelInput(order=sale, reason="backordered past the deadline")

    first = await env.run(channels.cancel_on_channel, request)
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 1})
    again = await env.run(channels.cancel_on_channel, request)

    assert first.cancelled and again.cancelled
    assert again.detail == "already cancelled on the channel"
    order = held(await state(sandbox, "shopify"), sale)
    assert order["cancelled_at"] is not None
    assert order["financial_status"] == "refunded"
