"""What the order saga leaves behind for a return to start from, built in the sandbox, and the warehouse's receipt.

Shared by the return activities' tests and the return saga's end-to-end test.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
from contracts.returns_sandbox import erp_order
from contracts.returns_sandbox import shipment as erp_shipment
from contracts.wms_sandbox import fulfillment_request, vendor_client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import RETURN_RECEIPT_TOPIC, WmsClient, return_receipt_from_webhook
from orderflow.canonical import Money, Order, Parcel
from orderflow.canonical.returns import ReturnReceipt
from orderflow.canonical.saga import order_reference
from orderflow.sandbox.seed import CATALOG_BY_SKU, RETURNS_WRITE_OFF_LOCATION
from orderflow.settings import Settings

WRITE_OFF = RETURNS_WRITE_OFF_LOCATION[0]
PARCEL = Parcel(length_in=Decimal(12), width_in=Decimal(10), height_in=Decimal(6), weight_oz=Decimal(52))


def usd(amount: str) -> Money:
    """Dollars, exactly."""
    return Money.of(amount, "USD")


async def sold_and_shipped(
    netsuite: NetSuiteClient,
    number: str,
    lines: dict[str, int],
    shipped: dict[str, int] | None = None,
    *,
    order: Order | None = None,
    erp_customer_id: str = "3001",
) -> tuple[Order, str]:
    """An order as the order saga leaves it in the ERP: posted under its reference and fulfilled; its ERP id."""
    order = order or erp_order(number, lines)
    items = await netsuite.find_items_by_sku(list(lines))
    ref = await netsuite.upsert_sales_order(
        order, external_id=order_reference(order.key), erp_customer_id=erp_customer_id,
        item_ids={sku: item.erp_item_id for sku, item in items.items()},
    )  # fmt: skip
    await netsuite.fulfill_sales_order(ref.erp_order_id, erp_shipment(shipped or lines, f"1Z{number}"),
                                       external_id=f"OF-fulfil-{number}")  # fmt: skip
    return order, ref.erp_order_id


async def until_committed(env: ActivityEnvironment, activity: Any, request: Any) -> Any:
    """Run an activity as Temporal would: again after a retryable failure (a lost answer), not after a permanent one."""
    for _ in range(10):
        try:
            return await env.run(activity, request)
        except ApplicationError as error:
            if error.non_retryable:
                raise
    return await env.run(activity, request)


async def shipped_in_warehouse(wms: WmsClient, settings: Settings, order_key: str, lines: list[tuple[str, int]]) -> str:
    """The order saga's fulfillment order, shipped by the warehouse; its WMS id."""
    made = await wms.create_order(fulfillment_request(order_reference(order_key), lines, warehouse_id="8"))
    async with vendor_client(settings) as vendor:
        shipped = await vendor.post(
            "/simulate/shipment", json={"order_id": made.wms_order_id, "simulation": {"action": "ShipOrder"}}
        )
        shipped.raise_for_status()
    return made.wms_order_id


async def received_in_warehouse(
    settings: Settings, sandbox: httpx.AsyncClient, wms_return_id: str, actions: list[tuple[str, str, int]]
) -> ReturnReceipt:
    """The warehouse opens the box (SKU, ShipBob action, units) and reports it: the receipt its webhook carries."""
    await sandbox.post("/sandbox/webhooks/subscriptions/wms", json={"topics": ["*"], "url": "http://127.0.0.1:9/x"})
    async with vendor_client(settings) as vendor:
        response = await vendor.post("/simulate/return", json={"return_id": wms_return_id, "actions": [
            {"inventory_id": CATALOG_BY_SKU[sku].wms_inventory_id, "action": action, "quantity": qty}
            for sku, action, qty in actions
        ]})  # fmt: skip
        response.raise_for_status()
    for delivery in (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json():
        payload = json.loads(delivery["body"])
        if delivery["topic"] == RETURN_RECEIPT_TOPIC and str(payload.get("id")) == wms_return_id:
            return return_receipt_from_webhook(payload)
    raise AssertionError(f"the warehouse reported no receipt for return {wms_return_id}")


ORDER_CREATE = """mutation OrderCreate($order: OrderCreateOrderInput!) {
  orderCreate(order: $order) { order { legacyResourceId } userErrors { field message code } }
}"""


async def delivered_order(shopify: ShopifyClient, lines: list[tuple[str, int]], number: str) -> Order:
    """A paid, taxed order placed on the Shopify sandbox and fulfilled in full, read back in canonical form."""
    variables = {
        "order": {
            "email": "ada@example.com",
            "financialStatus": "PAID",
            "customer": {"toAssociate": {"id": "gid://shopify/Customer/207119551"}},
            "lineItems": [
                {"variantId": f"gid://shopify/ProductVariant/{CATALOG_BY_SKU[sku].shopify_variant_id}", "quantity": qty,
                 "taxLines": [{"title": "State Tax", "rate": "0.0625"}]}
                for sku, qty in lines
            ],
            "shippingAddress": {"firstName": "Ada", "lastName": "Lovelace", "address1": "1 Main St",
                                "city": "Austin", "provinceCode": "TX", "zip": "78701", "countryCode": "US"},
        }
    }  # fmt: skip
    created = (await shopify.execute(ORDER_CREATE, variables))["orderCreate"]
    assert created["userErrors"] == []
    order_id = str(created["order"]["legacyResourceId"])
    await shopify.create_fulfillment(order_id, erp_shipment(dict(lines), number))
    return await shopify.get_order(order_id)


def held(snapshot: dict[str, Any], order: Order) -> dict[str, Any]:
    """The order as the Shopify sandbox holds it."""
    return dict(next(o for o in snapshot["orders"] if str(o["id"]) == order.channel_order_id))


async def customer_requests_return(sandbox: httpx.AsyncClient, order: Order, lines: dict[str, int]) -> str:
    """The customer asks for a return on the order status page; the Shopify return's id."""
    wanted = [{"sku": sku, "quantity": qty} for sku, qty in lines.items()]
    response = await sandbox.post(
        "/shopify/sandbox/returns/request", json={"order_id": order.channel_order_id, "lines": wanted}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
