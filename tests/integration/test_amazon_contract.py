"""The Amazon adapter against the sandbox's SP-API over real HTTP: orders, PII, shipments, feeds, listings, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orderflow.adapters.amazon import AFN_REASON, AmazonClient
from orderflow.adapters.errors import RateLimitedError, TransientError, ValidationRejectedError
from orderflow.canonical import Shipment, ShipmentLine, Tracking
from orderflow.canonical.money import Money
from orderflow.canonical.order import Channel
from orderflow.canonical.returns import Refund, RefundLine
from orderflow.sandbox import seed
from orderflow.settings import SANDBOX_AMAZON_MARKETPLACE_ID, AmazonSettings

pytestmark = pytest.mark.integration

MARKETPLACE = SANDBOX_AMAZON_MARKETPLACE_ID


def plentiful_skus(n: int) -> list[str]:
    return [item.sku for item in seed.CATALOG if sum(item.stock.values()) >= 20][:n]


@pytest.fixture
def amazon_settings(sandbox_url: str) -> AmazonSettings:
    return AmazonSettings(
        base_url=f"{sandbox_url}/amazon", lwa_url=f"{sandbox_url}/amazon/auth/o2/token", timeout_seconds=5
    )


@pytest.fixture
async def amazon(http: httpx.AsyncClient, amazon_settings: AmazonSettings) -> AsyncIterator[AmazonClient]:
    yield AmazonClient(http, amazon_settings)


async def place_order(
    sandbox: httpx.AsyncClient, lines: list[tuple[str, int]], *, channel: str = "MFN", cancel_reason: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"fulfillment_channel": channel, "lines": [{"sku": s, "quantity": q} for s, q in lines]}
    if cancel_reason:
        body["buyer_cancel_reason"] = cancel_reason
    response = await sandbox.post("/amazon/sandbox/orders", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def amazon_state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/state/amazon")
    response.raise_for_status()
    return dict(response.json())


async def order_state(sandbox: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    return next(o for o in (await amazon_state(sandbox))["orders"] if o["orderId"] == order_id)


def since(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(order["createdTime"].replace("Z", "+00:00")) - timedelta(minutes=1)


def shipment(shipment_id: str, lines: list[tuple[str, int]]) -> Shipment:
    return Shipment(
        shipment_id=shipment_id,
        tracking=Tracking(carrier="UPS", number=f"1Z{shipment_id}", service="Ground"),
        lines=[ShipmentLine(sku=s, quantity=q) for s, q in lines],
        shipped_at=datetime.fromisoformat("2026-11-21T18:00:00+00:00"),
    )


async def test_searches_orders_page_by_page_without_losing_one(
    amazon: AmazonClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    placed = [await place_order(sandbox, [(sku, 1)]) for _ in range(103)]

    found: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        page = await amazon.search_orders(updated_after=since(placed[0]), marketplace_id=MARKETPLACE, page_token=token)
        pages += 1
        found += [o.amazon_order_id for o in page.orders]
        token = page.next_token
        if token is None:
            break

    assert pages == 2
    assert sorted(found) == sorted(o["orderId"] for o in placed)


async def test_search_shows_buyer_cancellations_and_amazon_fulfilled_orders(
    amazon: AmazonClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    cancelled = await place_order(sandbox, [(sku, 1)], cancel_reason="Ordered by mistake")
    afn = await place_order(sandbox, [(sku, 1)], channel="AFN")

    page = await amazon.search_orders(updated_after=since(cancelled), marketplace_id=MARKETPLACE)

    by_id = {o.amazon_order_id: o for o in page.orders}
    assert by_id[cancelled["orderId"]].cancellation_requested
    assert by_id[cancelled["orderId"]].fulfillment_channel == "MFN"
    assert by_id[afn["orderId"]].fulfillment_channel == "AFN"


async def test_reads_an_mfn_order_with_its_restricted_address(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    a, b = plentiful_skus(2)
    placed = await place_order(sandbox, [(a, 2), (b, 1)])

    order = await amazon.get_order(placed["orderId"])

    assert order.channel is Channel.AMAZON
    assert order.key == f"order:amazon:{placed['orderId']}"
    assert [(line.sku, line.quantity) for line in order.lines] == [(a, 2), (b, 1)]
    # The sandbox withholds PII from a plain access token: the name and street came through an RDT.
    assert order.ship_to.name and order.ship_to.line1
    items = {i["sku"]: i for i in placed["items"]}
    assert order.lines[0].unit_price == Money.of(items[a]["unitPrice"], "USD")
    assert order.lines[0].tax_total == Money.of(items[a]["itemTax"], "USD")
    assert isinstance(order.total.amount, Decimal)
    assert order.total == order.subtotal + order.shipping_total + order.tax_total


async def test_refuses_an_amazon_fulfilled_order(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)
    afn = await place_order(sandbox, [(sku, 1)], channel="AFN")

    with pytest.raises(ValidationRejectedError, match=AFN_REASON):
        await amazon.get_order(afn["orderId"])


async def test_confirms_a_partial_shipment_then_the_rest(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    a, b = plentiful_skus(2)
    placed = await place_order(sandbox, [(a, 2), (b, 1)])
    order_id = placed["orderId"]

    await amazon.confirm_shipment(order_id, shipment("7001", [(a, 1)]))
    partly = await order_state(sandbox, order_id)
    await amazon.confirm_shipment(order_id, shipment("7001", [(a, 1)]))  # a repeat edits, never doubles
    repeated = await order_state(sandbox, order_id)
    await amazon.confirm_shipment(order_id, shipment("7002", [(a, 1), (b, 1)]))
    shipped = await order_state(sandbox, order_id)

    assert partly["status"] == "PARTIALLY_SHIPPED"
    assert {i["sku"]: i["quantityShipped"] for i in repeated["items"]} == {a: 1, b: 0}
    assert shipped["status"] == "SHIPPED"
    assert {i["sku"]: i["quantityShipped"] for i in shipped["items"]} == {a: 2, b: 1}
    assert sorted(s["trackingNumber"] for s in shipped["shipments"]) == ["1Z7001", "1Z7002"]


async def test_refuses_to_confirm_more_than_was_ordered(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)])

    with pytest.raises(ValidationRejectedError):
        await amazon.confirm_shipment(placed["orderId"], shipment("7003", [(sku, 2)]))

    assert (await order_state(sandbox, placed["orderId"]))["status"] != "SHIPPED"


async def test_cancels_a_buyer_cancelled_order_through_the_acknowledgement_feed(
    amazon: AmazonClient, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)], cancel_reason="Ordered by mistake")

    feed_id = await amazon.cancel_order(
        placed["orderId"], reason="buyer asked", idempotency_key="order:amazon:c1:cancel"
    )
    again = await amazon.cancel_order(placed["orderId"], reason="buyer asked", idempotency_key="order:amazon:c1:cancel")
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")
    status = await amazon.get_feed(feed_id)

    assert again == feed_id
    assert status.processing_status == "DONE"
    assert status.succeeded, status.errors
    assert (await order_state(sandbox, placed["orderId"]))["status"] == "CANCELLED"
    feeds = [f for f in (await amazon_state(sandbox))["feeds"] if f["feedType"] == "POST_ORDER_ACKNOWLEDGEMENT_DATA"]
    assert [f["feedId"] for f in feeds] == [feed_id]


async def test_refunds_through_the_adjustment_feed_once_and_checks_its_report(
    http: httpx.AsyncClient, amazon_settings: AmazonSettings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 2)])
    order_id = placed["orderId"]
    # No waiting inside the call: the first attempt must come back while the feed is queued.
    amazon = AmazonClient(http, amazon_settings.model_copy(update={"max_throttle_wait_seconds": 0}))
    order = await amazon.get_order(order_id)
    line = order.lines[0]
    amount = Money(amount=(line.net + line.tax_total).amount / 2, currency="USD").rounded()
    refund = Refund(
        order_key=order.key,
        lines=[RefundLine(line_id=line.line_id, sku=sku, quantity=1, amount=amount)],
        total=amount,
        reason="return",
    )

    with pytest.raises(TransientError, match="still"):
        await amazon.refund(order_id, refund, idempotency_key="return:amazon:r1:refund")
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")
    ref = await amazon.refund(order_id, refund, idempotency_key="return:amazon:r1:refund")

    assert ref.amount == amount
    state = await amazon_state(sandbox)
    feeds = [f for f in state["feeds"] if f["feedType"] == "POST_PAYMENT_ADJUSTMENT_DATA"]
    assert [f["feedId"] for f in feeds] == [ref.channel_refund_id]
    (refunded,) = next(o for o in state["orders"] if o["orderId"] == order_id)["refunds"]
    assert Decimal(refunded["amount"]) == amount.amount


async def test_a_refund_amazon_refuses_is_a_permanent_error(
    http: httpx.AsyncClient, amazon_settings: AmazonSettings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)])
    amazon = AmazonClient(http, amazon_settings.model_copy(update={"max_throttle_wait_seconds": 0}))
    order = await amazon.get_order(placed["orderId"])
    too_much = order.total + Money.of("100.00", "USD")
    refund = Refund(
        order_key=order.key,
        lines=[RefundLine(line_id=order.lines[0].line_id, sku=sku, quantity=1, amount=too_much)],
        total=too_much,
    )

    with pytest.raises(TransientError):
        await amazon.refund(placed["orderId"], refund, idempotency_key="return:amazon:r2:refund")
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 10})
    await sandbox.post("/sandbox/tick")
    with pytest.raises(ValidationRejectedError, match="exceeds"):
        await amazon.refund(placed["orderId"], refund, idempotency_key="return:amazon:r2:refund")

    assert (await order_state(sandbox, placed["orderId"]))["refunds"] == []


async def test_updates_the_listings_available_quantity(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)

    await amazon.update_availability(sku, 7)

    assert (await amazon_state(sandbox))["listings"][sku] == 7
    with pytest.raises(ValidationRejectedError):
        await amazon.update_availability("NO-SUCH-SKU", 1)


async def test_follows_the_rate_amazon_reports_per_operation(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)
    placed = await place_order(sandbox, [(sku, 1)])
    (await sandbox.put("/amazon/sandbox/rate-scale", json={"scale": 0.5})).raise_for_status()

    await amazon.get_order(placed["orderId"])
    await amazon.update_availability(sku, 3)

    assert amazon.rate_limits.bucket("getOrder").rate == pytest.approx(0.25)
    assert amazon.rate_limits.bucket("patchListingsItem").rate == pytest.approx(2.5)
    assert amazon.rate_limits.bucket("searchOrders").rate == pytest.approx(0.0056)  # not called: untouched


async def test_at_half_the_documented_rate_every_update_lands(amazon: AmazonClient, sandbox: httpx.AsyncClient) -> None:
    (sku,) = plentiful_skus(1)
    (await sandbox.put("/amazon/sandbox/rate-scale", json={"scale": 0.5})).raise_for_status()

    # patchListingsItem at half rate: 2.5 rps, burst 2 (Amazon's 5/5 halved, rounded); the adapter
    # learns the rate from the first answer and paces the rest itself.
    for quantity in range(6):
        await amazon.update_availability(sku, quantity)

    state = await amazon_state(sandbox)
    assert state["listings"][sku] == 5
    # Our bucket starts at Amazon's full burst of 5, so at most the first calls can overrun the halved one.
    assert state["throttled"].get("patchListingsItem", 0) <= 3


async def test_an_injected_throttle_is_waited_out_then_a_lasting_one_is_raised(
    http: httpx.AsyncClient, amazon_settings: AmazonSettings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    amazon = AmazonClient(http, amazon_settings.model_copy(update={"max_throttle_wait_seconds": 0.5}))
    # Amazon may omit Retry-After on a 429, as this one does: the adapter backs off from the
    # operation's rate (listings: 5 rps, so 0.2-0.4 s at first), doubling each time.
    rule = {"system": "amazon", "path": "/listings/*", "kind": "throttle", "times": 1}
    (await sandbox.post("/sandbox/faults", json=rule)).raise_for_status()

    await amazon.update_availability(sku, 4)

    assert (await amazon_state(sandbox))["listings"][sku] == 4
    (await sandbox.post("/sandbox/faults", json={**rule, "times": None})).raise_for_status()
    try:
        with pytest.raises(RateLimitedError) as caught:
            await amazon.update_availability(sku, 9)
        fired = [r["fired"] for r in (await sandbox.get("/sandbox/faults")).json() if r.get("times") is None]
    finally:
        await sandbox.delete("/sandbox/faults")
    assert caught.value.retryable
    assert caught.value.retry_after is not None and caught.value.retry_after > 0.5
    # Retried, but only after backing off, and handed to Temporal once the wait outgrew the limit.
    assert fired and 2 <= fired[0] <= 4
    assert (await amazon_state(sandbox))["listings"][sku] == 4
