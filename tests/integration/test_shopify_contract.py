"""The Shopify adapter against the Shopify simulator over real HTTP: every operation, every failure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest

from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from orderflow.adapters.shopify import ShopifyClient, refund_marker
from orderflow.canonical import Money, Refund, RefundLine, Shipment, ShipmentLine, Tracking
from orderflow.sandbox import SandboxConfig, create_app
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings, ShopifySettings

pytestmark = pytest.mark.integration
T = TypeVar("T")

ORDER_CREATE = """mutation OrderCreate($order: OrderCreateOrderInput!) {
  orderCreate(order: $order) { order { id legacyResourceId } userErrors { field message code } }
}"""


def order_input(lines: list[tuple[str, int]], *, variant_ids: dict[str, int] | None = None) -> dict[str, Any]:
    """An orderCreate input for seed SKUs (variant ids from the seed catalogue)."""
    from orderflow.sandbox.seed import CATALOG_BY_SKU

    return {
        "email": "grace@example.com",
        "financialStatus": "PAID",
        "customer": {"toAssociate": {"id": "gid://shopify/Customer/207119552"}},
        "lineItems": [
            {
                "variantId": f"gid://shopify/ProductVariant/{CATALOG_BY_SKU[sku].shopify_variant_id}",
                "quantity": qty,
                "taxLines": [{"title": "State Tax", "rate": "0.0625"}],
            }
            for sku, qty in lines
        ],
        "shippingLines": [
            {
                "title": "Standard",
                "code": "standard",
                "priceSet": {"shopMoney": {"amount": "9.95", "currencyCode": "USD"}},
            }
        ],
        "shippingAddress": {
            "firstName": "Grace",
            "lastName": "Hopper",
            "address1": "2 Navy Way",
            "city": "Arlington",
            "provinceCode": "VA",
            "zip": "22202",
            "countryCode": "US",
        },
        "discountCode": {"itemPercentageDiscountCode": {"code": "WELCOME10", "percentage": 10}},
    }


async def create_order(client: ShopifyClient, lines: list[tuple[str, int]]) -> str:
    """Place an order through the Admin API, as a real app would; returns its numeric id."""
    result = (await client.execute(ORDER_CREATE, {"order": order_input(lines)}))["orderCreate"]
    assert result["userErrors"] == []
    return str(result["order"]["legacyResourceId"])


async def state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/state/shopify")
    response.raise_for_status()
    return dict(response.json())


def sandbox_order(snapshot: dict[str, Any], order_id: str) -> dict[str, Any]:
    return next(o for o in snapshot["orders"] if str(o["id"]) == order_id)


def shipment(number: str, lines: list[tuple[str, int]]) -> Shipment:
    return Shipment(
        shipment_id=f"shp-{number}",
        tracking=Tracking(carrier="UPS", number=number, url=f"https://track.example/{number}"),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines],
        shipped_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )


def refund_for(order_id: str, line_id: str, sku: str, amount: str, *, restock: bool = True) -> Refund:
    money = Money.of(amount, "USD")
    return Refund(
        order_key=f"order:shopify:{order_id}",
        lines=[RefundLine(line_id=line_id, sku=sku, quantity=1, amount=money, restock=restock)],
        total=money,
        note="RMA-7",
    )


async def retry_until_ok(call: Callable[[], Awaitable[T]], attempts: int = 15) -> T:
    """Repeat a call after transient failures, as Temporal's activity retry would."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except TransientError:
            continue
    return await call()


@pytest.fixture
def shopify(settings: Settings, http: httpx.AsyncClient) -> ShopifyClient:
    return ShopifyClient(http, settings.shopify)


# --- reads --------------------------------------------------------------------------------------


async def test_get_order_maps_a_created_order_by_numeric_id_and_gid(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 2), ("NUT-M8-M", 1)])

    order = await shopify.get_order(order_id)
    again = await shopify.get_order(f"gid://shopify/Order/{order_id}")

    held = sandbox_order(await state(sandbox), order_id)
    assert order == again
    assert order.key == f"order:shopify:{order_id}"
    assert [(line.sku, line.quantity) for line in order.lines] == [("BOLT-M8-S", 2), ("NUT-M8-M", 1)]
    assert order.total == Money.of(held["total_price"], "USD")
    assert order.subtotal == Money.of(held["subtotal_price"], "USD")
    assert order.tax_total == Money.of(held["total_tax"], "USD")
    assert all(line.discounts[0].code == "WELCOME10" for line in order.lines)
    assert order.ship_to.name == "Grace Hopper" and order.ship_to.region == "VA"
    assert order.customer.channel_customer_id == "207119552"
    assert order.location_id is not None


async def test_get_order_of_an_unknown_order_is_not_found(shopify: ShopifyClient) -> None:
    with pytest.raises(NotFoundError):
        await shopify.get_order("1")


async def test_orders_can_be_searched_by_name(shopify: ShopifyClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    name = (await shopify.get_order(order_id)).order_number

    data = await shopify.execute(
        "query($q: String) { orders(first: 5, query: $q) { nodes { legacyResourceId name } } }", {"q": f"name:{name}"}
    )

    assert data["orders"]["nodes"] == [{"legacyResourceId": order_id, "name": name}]


# --- authentication -----------------------------------------------------------------------------


async def test_a_wrong_token_is_an_authentication_error(settings: Settings, http: httpx.AsyncClient) -> None:
    from pydantic import SecretStr

    client = ShopifyClient(http, settings.shopify.model_copy(update={"access_token": SecretStr("shpat_wrong")}))

    with pytest.raises(AuthenticationError) as caught:
        await client.get_order("1")

    assert caught.value.status_code == 401
    assert "Invalid API key or access token" in caught.value.message


async def test_client_credentials_token_is_cached_and_refreshed_after_expiry(
    settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    client = ShopifyClient(http, settings.shopify.model_copy(update={"auth_method": "client_credentials"}))
    order_id = await create_order(client, [("BOLT-M8-S", 1)])
    await client.get_order(order_id)
    assert (await state(sandbox))["tokens"] == 1

    # A day later on the shop's clock the token is dead; the client notices the 401 and renews it.
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 86400})
    order = await client.get_order(order_id)

    assert order.channel_order_id == order_id
    assert (await state(sandbox))["tokens"] == 2


async def test_a_wrong_client_secret_is_an_authentication_error(settings: Settings, http: httpx.AsyncClient) -> None:
    from pydantic import SecretStr

    client = ShopifyClient(
        http,
        settings.shopify.model_copy(update={"auth_method": "client_credentials", "client_secret": SecretStr("nope")}),
    )

    with pytest.raises(AuthenticationError) as caught:
        await client.get_order("1")

    assert caught.value.vendor_code == "invalid_client"


# --- throttling and errors ----------------------------------------------------------------------


async def test_an_injected_short_throttle_is_waited_out(shopify: ShopifyClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    rule = {"system": "shopify", "kind": "throttle", "times": 2, "retry_after": 0.1}
    await sandbox.post("/sandbox/faults", json=rule)

    order = await shopify.get_order(order_id)

    (fired,) = (await sandbox.get("/sandbox/faults")).json()
    assert order.channel_order_id == order_id
    assert fired["fired"] == 2


async def test_a_long_throttle_is_a_rate_limited_error_with_the_wait(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    await sandbox.post("/sandbox/faults", json={"system": "shopify", "kind": "throttle", "retry_after": 30})

    with pytest.raises(RateLimitedError) as caught:
        await shopify.get_order("1")

    assert caught.value.vendor_code == "THROTTLED"
    assert caught.value.retry_after == pytest.approx(30, abs=0.1)


async def test_a_5xx_is_transient_and_keeps_shopifys_code(shopify: ShopifyClient, sandbox: httpx.AsyncClient) -> None:
    await sandbox.post("/sandbox/faults", json={"system": "shopify", "kind": "error", "status": 503, "times": 1})

    with pytest.raises(TransientError) as caught:
        await shopify.get_order("1")

    assert caught.value.status_code == 503
    assert caught.value.vendor_code == "INTERNAL_SERVER_ERROR"


async def test_an_unknown_field_is_permanent_with_shopifys_wording(shopify: ShopifyClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await shopify.execute("{ shop { name vatNumber } }")

    assert not isinstance(caught.value, TransientError)
    assert caught.value.vendor_code == "undefinedField"
    assert "Field 'vatNumber' doesn't exist on type 'Shop'" in caught.value.message


async def test_a_query_over_1000_points_is_refused_as_permanent(shopify: ShopifyClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await shopify.execute("{ orders(first: 250) { nodes { id lineItems(first: 250) { nodes { id } } } } }")

    assert caught.value.vendor_code == "MAX_COST_EXCEEDED"
    assert "exceeds the single query max cost limit (1000)" in caught.value.message


async def test_every_answer_reports_its_cost(shopify: ShopifyClient) -> None:
    await shopify.execute("{ orders(first: 10) { nodes { id } } }")

    cost = shopify.last_cost
    assert cost is not None
    assert cost["requestedQueryCost"] == 12
    assert cost["actualQueryCost"] <= 12
    assert cost["throttleStatus"]["maximumAvailable"] == 1000.0


@pytest.fixture(scope="module")
def tight_sandbox() -> Iterator[str]:
    """A sandbox whose Shopify bucket holds 60 points and answers THROTTLED with HTTP 429."""
    config = SandboxConfig(shopify_bucket_size=60, shopify_restore_rate=100, shopify_throttle_status=429)
    with BackgroundServer(create_app(config, run_engines=False)) as server:
        yield server.url


async def test_an_empty_bucket_throttles_and_the_client_recovers(tight_sandbox: str, http: httpx.AsyncClient) -> None:
    client = ShopifyClient(http, ShopifySettings(base_url=f"{tight_sandbox}/shopify", timeout_seconds=5))
    query = "{ orders(first: 25) { nodes { id customer { id } } } }"  # 2 + 25 x 2 = 52 points requested

    await client.execute(query)
    await client.execute(query)  # only ~10 points back in the bucket: throttled, waited out, retried

    assert client.last_cost is not None
    assert client.last_cost["requestedQueryCost"] == 52


async def test_a_bucket_too_small_for_the_query_is_rate_limited(tight_sandbox: str, http: httpx.AsyncClient) -> None:
    client = ShopifyClient(
        http,
        ShopifySettings(base_url=f"{tight_sandbox}/shopify", timeout_seconds=5, max_throttle_wait_seconds=0.01),
    )

    with pytest.raises(RateLimitedError) as caught:
        await client.execute("{ orders(first: 50) { nodes { id customer { id } } } }")  # 102 > 60

    assert caught.value.status_code == 429
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


# --- cancel -------------------------------------------------------------------------------------


async def test_cancel_returns_a_job_that_completes_and_cancels_the_order(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])

    job = await shopify.cancel_order(order_id, reason="customer", restock=True, staff_note="buyer asked")
    assert job.job_id is not None and not job.already_cancelled
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 1})
    finished = await shopify.get_cancel_job(job.job_id)
    again = await shopify.cancel_order(order_id, reason="customer", restock=True)

    held = sandbox_order(await state(sandbox), order_id)
    assert finished.done
    assert held["cancelled_at"] is not None and held["cancel_reason"] == "customer"
    assert held["financial_status"] == "refunded"
    assert again.already_cancelled and again.done


async def test_cancel_of_a_shipped_order_is_a_conflict(shopify: ShopifyClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    await shopify.create_fulfillment(order_id, shipment("1Z0001", [("BOLT-M8-S", 1)]))

    with pytest.raises(ConflictError) as caught:
        await shopify.cancel_order(order_id, reason="customer", restock=True)

    assert caught.value.vendor_code == "INVALID"


# --- fulfillment --------------------------------------------------------------------------------


async def test_fulfillment_records_only_the_shipped_units_with_tracking(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 3), ("NUT-M8-M", 2)])

    ref = await shopify.create_fulfillment(order_id, shipment("1Z0002", [("BOLT-M8-S", 2)]), notify_customer=True)

    held = sandbox_order(await state(sandbox), order_id)
    (fulfillment,) = held["fulfillments"]
    assert ref.created and ref.fulfillment_id == fulfillment["admin_graphql_api_id"]
    assert fulfillment["tracking_number"] == "1Z0002" and fulfillment["tracking_company"] == "UPS"
    assert [(li["sku"], li["quantity"]) for li in fulfillment["line_items"]] == [("BOLT-M8-S", 2)]
    remaining = {li["line_item_id"]: li["remaining"] for li in held["fulfillment_orders"][0]["line_items"]}
    assert sorted(remaining.values()) == [1, 2]
    assert held["fulfillment_status"] == "partial"


async def test_fulfilling_the_same_shipment_twice_returns_the_first(
    shopify: ShopifyClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    first = await shopify.create_fulfillment(order_id, shipment("1Z0003", [("BOLT-M8-S", 1)]))

    second = await shopify.create_fulfillment(order_id, shipment("1Z0003", [("BOLT-M8-S", 1)]))

    assert second.fulfillment_id == first.fulfillment_id and not second.created
    assert len(sandbox_order(await state(sandbox), order_id)["fulfillments"]) == 1


async def test_shipping_more_than_is_open_is_a_conflict(shopify: ShopifyClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    await shopify.create_fulfillment(order_id, shipment("1Z0004", [("BOLT-M8-S", 1)]))

    with pytest.raises(ConflictError) as caught:
        await shopify.create_fulfillment(order_id, shipment("1Z0005", [("BOLT-M8-S", 1)]))

    assert caught.value.vendor_code == "NOTHING_TO_FULFILL"
    assert len(sandbox_order(await state(sandbox), order_id)["fulfillments"]) == 1


async def test_the_simulator_refuses_a_closed_fulfillment_order_as_a_user_error(shopify: ShopifyClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    await shopify.create_fulfillment(order_id, shipment("1Z0006", [("BOLT-M8-S", 1)]))
    data = await shopify.execute(
        "query($id: ID!) { order(id: $id) { fulfillmentOrders(first: 1) { nodes { id status } } } }",
        {"id": f"gid://shopify/Order/{order_id}"},
    )
    (fo,) = data["order"]["fulfillmentOrders"]["nodes"]

    result = await shopify.execute(
        "mutation($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) {"
        " fulfillment { id } userErrors { field message } } }",
        {"f": {"lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fo["id"]}]}},
    )

    assert fo["status"] == "CLOSED"
    assert result["fulfillmentCreate"]["fulfillment"] is None
    assert "unfulfillable status" in result["fulfillmentCreate"]["userErrors"][0]["message"]


async def test_a_fulfillment_whose_answer_was_lost_is_not_duplicated_on_retry(
    settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    impatient = ShopifyClient(http, settings.shopify.model_copy(update={"timeout_seconds": 0.3}))
    order_id = await create_order(impatient, [("BOLT-M8-S", 2)])
    await sandbox.post(
        "/sandbox/faults",
        json={
            "system": "shopify",
            "kind": "timeout_after_commit",
            "operation": "fulfillmentCreate",
            "hold_seconds": 0.6,
            "times": 1,
        },
    )

    with pytest.raises(TransientError):
        await impatient.create_fulfillment(order_id, shipment("1Z0007", [("BOLT-M8-S", 2)]))
    ref = await impatient.create_fulfillment(order_id, shipment("1Z0007", [("BOLT-M8-S", 2)]))

    (fulfillment,) = sandbox_order(await state(sandbox), order_id)["fulfillments"]
    assert not ref.created and ref.fulfillment_id == fulfillment["admin_graphql_api_id"]


# --- refunds ------------------------------------------------------------------------------------


async def _first_line(client: ShopifyClient, order_id: str) -> tuple[str, str]:
    order = await client.get_order(order_id)
    return order.lines[0].line_id, order.lines[0].sku


async def test_refund_creates_one_refund_and_restocks(shopify: ShopifyClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 2)])
    line_id, sku = await _first_line(shopify, order_id)
    before = await state(sandbox)

    ref = await shopify.refund(order_id, refund_for(order_id, line_id, sku, "10.00"), idempotency_key="ret-1")
    again = await shopify.refund(order_id, refund_for(order_id, line_id, sku, "10.00"), idempotency_key="ret-1")

    after = await state(sandbox)
    (held,) = sandbox_order(after, order_id)["refunds"]
    assert ref == again
    assert ref.amount == Money.of("10.00", "USD") and ref.channel_refund_id == str(held["id"])
    assert held["note"] == f"RMA-7 {refund_marker('ret-1')}"
    assert held["refund_line_items"][0]["restock_type"] == "return"
    assert sandbox_order(after, order_id)["financial_status"] == "partially_refunded"

    def on_hand(snapshot: dict[str, Any]) -> int:
        return sum(row["on_hand"] for row in snapshot["inventory"] if row["sku"] == sku)

    assert on_hand(after) == on_hand(before) + 1


async def test_refunding_more_than_was_paid_is_refused(shopify: ShopifyClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await create_order(shopify, [("BOLT-M8-S", 1)])
    line_id, sku = await _first_line(shopify, order_id)

    with pytest.raises(ConflictError) as caught:
        await shopify.refund(order_id, refund_for(order_id, line_id, sku, "5000.00"), idempotency_key="ret-big")

    assert "refundable amount" in caught.value.message
    assert sandbox_order(await state(sandbox), order_id)["refunds"] == []


async def test_refund_on_2026_04_sends_the_idempotent_directive(
    settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    client = ShopifyClient(http, settings.shopify.model_copy(update={"api_version": "2026-04"}))
    order_id = await create_order(client, [("BOLT-M8-S", 1)])
    line_id, sku = await _first_line(client, order_id)

    await client.refund(order_id, refund_for(order_id, line_id, sku, "5.00"), idempotency_key="ret-2604")

    assert "refundCreate:ret-2604" in (await state(sandbox))["idempotency_keys"]


async def test_2026_04_refuses_a_refund_without_the_directive(settings: Settings, http: httpx.AsyncClient) -> None:
    client = ShopifyClient(http, settings.shopify.model_copy(update={"api_version": "2026-04"}))
    order_id = await create_order(client, [("BOLT-M8-S", 1)])

    with pytest.raises(PermanentError) as caught:
        await client.execute(
            "mutation($i: RefundInput!) { refundCreate(input: $i) { refund { id } userErrors { message } } }",
            {"i": {"orderId": f"gid://shopify/Order/{order_id}", "note": "x", "shipping": {"fullRefund": True}}},
        )

    assert caught.value.vendor_code == "BAD_REQUEST"
    assert "@idempotent" in caught.value.message


@pytest.mark.parametrize("api_version", ["2025-10", "2026-04"])
async def test_a_refund_whose_answer_was_lost_is_not_duplicated_on_retry(
    api_version: str, settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    impatient = ShopifyClient(
        http, settings.shopify.model_copy(update={"timeout_seconds": 0.3, "api_version": api_version})
    )
    order_id = await create_order(impatient, [("BOLT-M8-S", 2)])
    line_id, sku = await _first_line(impatient, order_id)
    await sandbox.post(
        "/sandbox/faults",
        json={
            "system": "shopify",
            "kind": "timeout_after_commit",
            "operation": "refundCreate",
            "hold_seconds": 0.6,
            "times": 1,
        },
    )
    refund = refund_for(order_id, line_id, sku, "7.50")

    with pytest.raises(TransientError):
        await impatient.refund(order_id, refund, idempotency_key="ret-lost")
    ref = await impatient.refund(order_id, refund, idempotency_key="ret-lost")

    (held,) = sandbox_order(await state(sandbox), order_id)["refunds"]
    assert ref.channel_refund_id == str(held["id"])


# --- inventory (simulator behaviour through the real client) ---------------------------------------


INVENTORY_SET = """mutation($input: InventorySetQuantitiesInput!, $key: String!) {
  inventorySetQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { changes { name delta quantityAfterChange } } userErrors { field message code }
  }
}"""
INVENTORY_ADJUST = """mutation($input: InventoryAdjustQuantitiesInput!, $key: String!) {
  inventoryAdjustQuantities(input: $input) @idempotent(key: $key) {
    inventoryAdjustmentGroup { changes { delta quantityAfterChange } } userErrors { field message code }
  }
}"""
INVENTORY_READ = """query($id: ID!, $loc: ID!) {
  inventoryItem(id: $id) {
    sku inventoryLevel(locationId: $loc) { quantities(names: ["available", "on_hand"]) { name quantity } }
  }
}"""


@pytest.fixture
def shopify_2026(settings: Settings, http: httpx.AsyncClient) -> ShopifyClient:
    return ShopifyClient(http, settings.shopify.model_copy(update={"api_version": "2026-04"}))


async def _available(client: ShopifyClient, item: str, location: str) -> int:
    data = await client.execute(INVENTORY_READ, {"id": item, "loc": location})
    quantities = {q["name"]: q["quantity"] for q in data["inventoryItem"]["inventoryLevel"]["quantities"]}
    return int(quantities["available"])


async def test_inventory_set_is_a_compare_and_set(shopify_2026: ShopifyClient) -> None:
    from orderflow.sandbox.seed import CATALOG_BY_SKU

    item = f"gid://shopify/InventoryItem/{CATALOG_BY_SKU['TAPE-PKG-S'].shopify_inventory_item_id}"
    location = "gid://shopify/Location/72000000011"
    current = await _available(shopify_2026, item, location)

    def change(compare: int, quantity: int) -> dict[str, Any]:
        return {
            "name": "available",
            "reason": "correction",
            "quantities": [
                {"inventoryItemId": item, "locationId": location, "quantity": quantity, "compareQuantity": compare}
            ],
        }

    stale = await shopify_2026.execute(INVENTORY_SET, {"input": change(current + 1, 5), "key": "set-1"})
    fresh = await shopify_2026.execute(INVENTORY_SET, {"input": change(current, 5), "key": "set-2"})

    assert stale["inventorySetQuantities"]["userErrors"][0]["code"] == "COMPARE_QUANTITY_STALE"
    assert fresh["inventorySetQuantities"]["userErrors"] == []
    assert await _available(shopify_2026, item, location) == 5


async def test_inventory_adjust_with_the_same_key_applies_once(shopify_2026: ShopifyClient) -> None:
    from orderflow.sandbox.seed import CATALOG_BY_SKU

    item = f"gid://shopify/InventoryItem/{CATALOG_BY_SKU['TAPE-PKG-S'].shopify_inventory_item_id}"
    location = "gid://shopify/Location/72000000011"
    before = await _available(shopify_2026, item, location)
    change = {
        "name": "available",
        "reason": "received",
        "referenceDocumentUri": "gid://orderflow/Receipt/1",
        "changes": [{"delta": 4, "inventoryItemId": item, "locationId": location}],
    }

    first = await shopify_2026.execute(INVENTORY_ADJUST, {"input": change, "key": "adj-1"})
    second = await shopify_2026.execute(INVENTORY_ADJUST, {"input": change, "key": "adj-1"})

    assert first == second
    assert await _available(shopify_2026, item, location) == before + 4


# --- acceptance: every create survives lost answers -----------------------------------------------


async def test_creates_retried_through_lost_answers_leave_exactly_one_record_each(
    settings: Settings, http: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    impatient = ShopifyClient(http, settings.shopify.model_copy(update={"timeout_seconds": 0.3}))
    orders = [await create_order(impatient, [("BOLT-M8-S", 2), ("NUT-M8-M", 1)]) for _ in range(3)]
    lines = {order_id: await impatient.get_order(order_id) for order_id in orders}
    to_cancel = await create_order(impatient, [("WASH-M8-S", 1)])
    await sandbox.post(
        "/sandbox/faults",
        json={
            "system": "shopify",
            "kind": "timeout_after_commit",
            "mutating_only": True,
            "rate": 0.3,
            "hold_seconds": 0.6,
        },
    )

    for order_id in orders:
        line = lines[order_id].lines[0]
        await retry_until_ok(lambda o=order_id: impatient.create_fulfillment(o, shipment(f"1Z{o}", [("BOLT-M8-S", 2)])))
        await retry_until_ok(
            lambda o=order_id, li=line: impatient.refund(
                o, refund_for(o, li.line_id, li.sku, "3.00", restock=False), idempotency_key=f"ret-{o}"
            )
        )
    await retry_until_ok(lambda: impatient.cancel_order(to_cancel, reason="inventory", restock=True))
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 1})
    await sandbox.post("/sandbox/tick")  # the cancel job finishes on the shop's clock

    snapshot = await state(sandbox)
    (rule,) = (await sandbox.get("/sandbox/faults")).json()
    assert rule["fired"] >= 1, "the fault never fired, so this test proved nothing"
    for order_id in orders:
        held = sandbox_order(snapshot, order_id)
        assert len(held["fulfillments"]) == 1
        assert len(held["refunds"]) == 1
        assert Decimal(held["refunds"][0]["transactions"][0]["amount"]) == Decimal("3.00")
    cancelled = sandbox_order(snapshot, to_cancel)
    assert cancelled["cancelled_at"] is not None
    assert len([j for j in snapshot["jobs"] if j["order_id"] == int(to_cancel)]) == 1
