"""Shopify's side of a return and of refunds, through the adapter, against the simulator.

Returns are requested by the simulated customer and approved, labelled, closed or cancelled through
the Admin API; refunds are made by orderflow (once per key) or by a person in the admin.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from contracts.returns_sandbox import system_state

from orderflow.adapters.errors import ConflictError, NotFoundError, TransientError, ValidationRejectedError
from orderflow.adapters.shopify import (
    ShopifyClient,
    refund_from_webhook,
    refund_issued_by_orderflow,
    return_from_webhook,
)
from orderflow.canonical import (
    Label,
    Money,
    Rate,
    Refund,
    RefundLine,
    Shipment,
    ShipmentLine,
    Tracking,
)
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.settings import Settings

pytestmark = pytest.mark.integration

ORDER_CREATE = """mutation OrderCreate($order: OrderCreateOrderInput!) {
  orderCreate(order: $order) { order { id legacyResourceId } userErrors { field message code } }
}"""


@pytest.fixture
def shopify(settings: Settings, http: httpx.AsyncClient) -> ShopifyClient:
    return ShopifyClient(http, settings.shopify)


async def shipped_order(shopify: ShopifyClient, lines: list[tuple[str, int]], *, number: str = "1Z-RET") -> str:
    """A paid, taxed order placed and then fulfilled in full; its numeric id."""
    order = {
        "email": "grace@example.com",
        "financialStatus": "PAID",
        "customer": {"toAssociate": {"id": "gid://shopify/Customer/207119552"}},
        "lineItems": [
            {"variantId": f"gid://shopify/ProductVariant/{CATALOG_BY_SKU[sku].shopify_variant_id}", "quantity": qty,
             "taxLines": [{"title": "State Tax", "rate": "0.0625"}]}
            for sku, qty in lines
        ],
        "shippingLines": [{"title": "Standard", "code": "standard",
                           "priceSet": {"shopMoney": {"amount": "9.95", "currencyCode": "USD"}}}],
        "shippingAddress": {"firstName": "Grace", "lastName": "Hopper", "address1": "2 Navy Way",
                            "city": "Arlington", "provinceCode": "VA", "zip": "22202", "countryCode": "US"},
    }  # fmt: skip
    result = (await shopify.execute(ORDER_CREATE, {"order": order}))["orderCreate"]
    assert result["userErrors"] == []
    order_id = str(result["order"]["legacyResourceId"])
    shipment = Shipment(
        shipment_id=f"shp-{number}", tracking=Tracking(carrier="UPS", number=number),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines], shipped_at=datetime(2026, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    await shopify.create_fulfillment(order_id, shipment)
    return order_id


async def listen(sandbox: httpx.AsyncClient) -> None:
    """Subscribe a (dead) endpoint to every Shopify topic, so each event is kept in the outbox."""
    response = await sandbox.post(
        "/sandbox/webhooks/subscriptions/shopify", json={"topics": ["*"], "url": "http://127.0.0.1:9/hooks"}
    )
    response.raise_for_status()


async def bodies(sandbox: httpx.AsyncClient, topic: str) -> list[dict[str, Any]]:
    """Every webhook body the sandbox emitted for a topic, oldest first."""
    deliveries = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "shopify"})).json()
    return [json.loads(d["body"]) for d in deliveries if d["topic"] == topic and not d.get("duplicate_of")]


async def customer_requests(sandbox: httpx.AsyncClient, order_id: str, lines: list[dict[str, Any]]) -> httpx.Response:
    return await sandbox.post("/shopify/sandbox/returns/request", json={"order_id": order_id, "lines": lines})


def return_label(number: str = "EZ4000000004") -> Label:
    return Label(
        carrier_shipment_id="shp_ret_1", reference="return:shopify:1",
        rate=Rate(rate_id="rate_1", carrier="USPS", service="GroundAdvantage", amount=Money.of("6.10", "USD")),
        tracking_number=number, label_url=f"https://labels.example/{number}.pdf",
        tracking_url=f"https://track.example/{number}", is_return=True,
    )  # fmt: skip


async def test_a_customer_return_is_read_approved_labelled_and_closed_once_each(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    await listen(sandbox)
    order_id = await shipped_order(shopify, [("BOLT-M8-S", 3), ("NUT-M8-M", 1)])
    requested = await customer_requests(sandbox, order_id, [{"sku": "BOLT-M8-S", "quantity": 2, "reason": "defective"}])
    assert requested.status_code == 201, requested.text
    return_id = str(requested.json()["id"])

    (request_body,) = await bodies(sandbox, "returns/request")
    assert request_body["status"] == "requested" and "sku" not in json.dumps(request_body)
    with pytest.raises(ValidationRejectedError) as caught:  # the body names line items, not SKUs
        return_from_webhook(request_body, requested_at=datetime.now(UTC))
    assert caught.value.message.startswith(f"return {return_id} line")
    order = await shopify.get_order(order_id)
    from_webhook = return_from_webhook(request_body, order=order, requested_at=datetime(2026, 3, 2, tzinfo=UTC))
    read = await shopify.get_return(return_id)
    assert (read.key, read.order_key) == (f"return:shopify:{return_id}", f"order:shopify:{order_id}")
    assert [(ln.sku, ln.quantity, ln.reason) for ln in read.lines] == [("BOLT-M8-S", 2, "defective")]
    assert from_webhook.lines == read.lines and from_webhook.key == read.key
    assert await shopify.return_status(return_id) == "requested"

    await shopify.approve_return(return_id)
    await shopify.approve_return(return_id)
    assert await shopify.return_status(return_id) == "open"
    (approve_body,) = await bodies(sandbox, "returns/approve")
    assert return_from_webhook(approve_body, order=order, requested_at=datetime.now(UTC)).lines == read.lines

    await shopify.attach_return_label(return_id, return_label())
    await shopify.attach_return_label(return_id, return_label())
    held = next(o for o in (await system_state(sandbox, "shopify"))["orders"] if str(o["id"]) == order_id)
    ((stored,),) = [r["reverse_deliveries"] for r in held["returns"]]
    assert (stored["tracking_number"], stored["label_url"]) == (
        "EZ4000000004",
        "https://labels.example/EZ4000000004.pdf",
    )
    assert [item["quantity"] for item in stored["line_items"]] == [2]

    await shopify.close_return(return_id)
    await shopify.close_return(return_id)
    assert await shopify.return_status(return_id) == "closed"
    assert len(await bodies(sandbox, "returns/close")) == 1
    with pytest.raises(ConflictError):
        await shopify.cancel_return(return_id)


async def test_a_label_for_a_requested_return_approves_it_and_a_cancel_happens_once(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    await listen(sandbox)
    order_id = await shipped_order(shopify, [("GLOVE-NIT-S", 2)], number="1Z-RET2")
    return_id = str((await customer_requests(sandbox, order_id, [{"sku": "GLOVE-NIT-S", "quantity": 2}])).json()["id"])
    await shopify.attach_return_label(return_id, return_label("EZ1000000001"))
    assert await shopify.return_status(return_id) == "open"
    await shopify.cancel_return(return_id)
    await shopify.cancel_return(return_id)
    assert await shopify.return_status(return_id) == "canceled"
    assert len(await bodies(sandbox, "returns/cancel")) == 1
    with pytest.raises(ConflictError):
        await shopify.approve_return(return_id)
    with pytest.raises(ConflictError):
        await shopify.close_return(return_id)
    # The cancelled return's units may be asked for again; more than were fulfilled may not.
    again = await customer_requests(sandbox, order_id, [{"sku": "GLOVE-NIT-S", "quantity": 2}])
    assert again.status_code == 201
    too_many = await customer_requests(sandbox, order_id, [{"sku": "GLOVE-NIT-S", "quantity": 1}])
    assert too_many.status_code == 422 and "too many" in too_many.text
    with pytest.raises(NotFoundError):
        await shopify.get_return("999999")


async def test_orderflows_refund_is_made_once_per_key_even_when_its_answer_is_lost(
    settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    await listen(sandbox)
    # Only the faulted call is impatient: a 0.3 s timeout on the setup calls fails on a loaded machine.
    patient = ShopifyClient(http, settings.shopify)
    impatient = ShopifyClient(http, settings.shopify.model_copy(update={"timeout_seconds": 0.3}))
    order_id = await shipped_order(patient, [("TAPE-PKG-S", 2)], number="1Z-RET3")
    line = (await patient.get_order(order_id)).lines[0]
    amount = Money.of("15.83", "USD")  # 14.90 + 6.25% tax for one unit
    refund_line = RefundLine(line_id=line.line_id, sku=line.sku, quantity=1, amount=amount, restock=True)
    refund = Refund(order_key=f"order:shopify:{order_id}", total=amount, note="return 1", lines=[refund_line])
    assert await patient.find_refund(order_id, "return:shopify:1:refund") is None

    lost = {"system": "shopify", "kind": "timeout_after_commit", "operation": "refundCreate", "hold_seconds": 0.6}
    await sandbox.post("/sandbox/faults", json={**lost, "times": 1})
    with pytest.raises(TransientError):
        await impatient.refund(order_id, refund, idempotency_key="return:shopify:1:refund")
    found = await patient.find_refund(order_id, "return:shopify:1:refund")
    made = await patient.refund(order_id, refund, idempotency_key="return:shopify:1:refund")
    assert found == made and made.amount == amount

    held = next(o for o in (await system_state(sandbox, "shopify"))["orders"] if str(o["id"]) == order_id)
    assert [Decimal(t["amount"]) for r in held["refunds"] for t in r["transactions"]] == [Decimal("15.83")]
    (created,) = await bodies(sandbox, "refunds/create")
    assert refund_issued_by_orderflow(created)
    assert refund_from_webhook(created).total == amount


async def test_a_refund_made_in_the_admin_is_not_orderflows_and_carries_its_tax(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    await listen(sandbox)
    order_id = await shipped_order(shopify, [("BOX-12-M", 2)], number="1Z-RET4")
    response = await sandbox.post("/shopify/sandbox/refunds", json={
        "order_id": order_id, "lines": [{"sku": "BOX-12-M", "quantity": 1}], "shipping": "4.00",
        "note": "Goodwill, box crushed"})  # fmt: skip
    assert response.status_code == 201, response.text
    (created,) = await bodies(sandbox, "refunds/create")
    assert not refund_issued_by_orderflow(created)
    refund = refund_from_webhook(created)
    price = CATALOG_BY_SKU["BOX-12-M"].price
    line_amount = (price * Decimal("1.0625")).quantize(Decimal("0.01"))
    assert [(ln.sku, ln.quantity, ln.amount.amount) for ln in refund.lines] == [("BOX-12-M", 1, line_amount)]
    assert refund.shipping == Money.of("4.00", "USD")
    assert refund.total == Money.of(line_amount + Decimal("4.00"), "USD")
    assert await shopify.find_refund(order_id, "anything") is None
    refused = await sandbox.post("/shopify/sandbox/refunds", json={"order_id": "1", "lines": []})
    assert refused.status_code == 422


def test_a_return_webhook_without_its_basics_is_refused_with_the_field() -> None:
    with pytest.raises(ValidationRejectedError) as caught:
        return_from_webhook({"id": 5, "return_line_items": []})
    assert caught.value.message.startswith("return 5 names no order")
    body = {"id": 5, "order": {"id": 77}, "created_at": "2026-03-01T10:00:00-05:00", "return_line_items": [
        {"id": 1, "quantity": 1, "return_reason": "unknown",
         "fulfillment_line_item": {"id": 2, "line_item": {"id": 3, "sku": "BOLT-M8-S"}}}]}  # fmt: skip
    parsed = return_from_webhook(body)
    assert (parsed.order_key, parsed.lines[0].reason) == ("order:shopify:77", None)
    with pytest.raises(ValidationRejectedError):
        return_from_webhook({**body, "created_at": None})
    with pytest.raises(ValidationRejectedError):
        return_from_webhook({**body, "return_line_items": [{**body["return_line_items"][0], "quantity": None}]})
    assert not refund_issued_by_orderflow({"note": None})
