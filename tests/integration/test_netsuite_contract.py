"""The NetSuite adapter against the simulator over real HTTP, with both ways of signing in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    TransientError,
    ValidationRejectedError,
)
from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.canonical import (
    Address,
    Channel,
    Customer,
    Money,
    Order,
    OrderLine,
    PaymentTerms,
    ReturnLine,
    SalesOrderStatus,
    Shipment,
    ShipmentLine,
    Tracking,
)
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.settings import NetSuiteSettings, Settings

pytestmark = pytest.mark.integration
T = TypeVar("T")


@pytest.fixture(params=["oauth2", "tba"])
def ns_settings(request: pytest.FixtureRequest, settings: Settings) -> NetSuiteSettings:
    return settings.netsuite.model_copy(update={"auth_method": request.param})


@pytest.fixture
def client(http: httpx.AsyncClient, ns_settings: NetSuiteSettings) -> NetSuiteClient:
    return NetSuiteClient(http, ns_settings)


async def netsuite_state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/state/netsuite")
    response.raise_for_status()
    return response.json()


def with_external_id(state: dict[str, Any], record_type: str, external_id: str) -> list[dict[str, Any]]:
    return [r for r in state["records"][record_type] if r.get("externalId") == external_id]


def make_order(number: str, lines: dict[str, int]) -> Order:
    order_lines = [
        OrderLine(line_id=str(i), sku=sku, quantity=qty, unit_price=Money.of(CATALOG_BY_SKU[sku].price, "USD"))
        for i, (sku, qty) in enumerate(lines.items(), start=1)
    ]
    subtotal = sum((line.gross.amount for line in order_lines), Decimal(0))
    return Order(
        channel=Channel.SHOPIFY, channel_order_id=number, order_number=f"#{number}",
        placed_at=datetime(2025, 8, 1, tzinfo=UTC), currency="USD",
        customer=Customer(name="Acme Industrial Supply", erp_customer_id="3001"),
        ship_to=Address(name="Acme", line1="100 Factory Rd", city="Dayton", region="OH", postal_code="45402",
                        country="US"),
        lines=order_lines, total=Money.of(subtotal, "USD"),
    )  # fmt: skip


def shipment(lines: dict[str, int], number: str = "1Z999") -> Shipment:
    return Shipment(
        shipment_id=f"shp-{number}", tracking=Tracking(carrier="UPS", number=number),
        lines=[ShipmentLine(sku=sku, quantity=qty) for sku, qty in lines.items()],
        shipped_at=datetime(2025, 8, 2, tzinfo=UTC),
    )  # fmt: skip


async def post_order(client: NetSuiteClient, number: str, lines: dict[str, int]) -> str:
    items = await client.find_items_by_sku(list(lines))
    ref = await client.upsert_sales_order(
        make_order(number, lines), external_id=f"SO-{number}", erp_customer_id="3001",
        item_ids={sku: item.erp_item_id for sku, item in items.items()}, location_id="6",
    )  # fmt: skip
    return ref.erp_order_id


async def until_done(step: Callable[[], Awaitable[T]], attempts: int = 30) -> T:
    """Retry a step on transient failures, as Temporal would."""
    for _ in range(attempts - 1):
        try:
            return await step()
        except TransientError:
            continue
    return await step()


# ------------------------------------------------------------------ operations


async def test_upserting_a_customer_twice_keeps_one_record(client: NetSuiteClient, sandbox: httpx.AsyncClient) -> None:
    customer = Customer(name="Wayne Enterprises", email="ap@wayne.example", terms=PaymentTerms.TERMS,
                        credit_limit=Money.of("20000", "USD"))  # fmt: skip
    first = await client.upsert_customer(customer, external_id="shopify-customer-900")
    second = await client.upsert_customer(customer, external_id="shopify-customer-900")
    assert first == second
    state = await netsuite_state(sandbox)
    assert [c["companyName"] for c in with_external_id(state, "customer", "shopify-customer-900")] == [
        "Wayne Enterprises"
    ]
    assert state["credit"][first]["creditLimit"] == "20000"


async def test_upserting_a_seed_customer_keeps_its_credit_position(client: NetSuiteClient) -> None:
    erp_id = await client.upsert_customer(Customer(name="Globex Distribution", terms=PaymentTerms.TERMS,
                                                   credit_limit=Money.of("10000", "USD")),
                                          external_id="shopify-customer-307119552")  # fmt: skip
    assert erp_id == "3002"
    standing = await client.get_customer_credit("3002")
    assert standing.balance == Money.of("9400", "USD")


async def test_items_are_found_by_sku_and_unknown_skus_are_absent(client: NetSuiteClient) -> None:
    items = await client.find_items_by_sku(["BOLT-M8-S", "NUT-M8-M", "NOPE-1", "O'BRIEN"])
    assert set(items) == {"BOLT-M8-S", "NUT-M8-M"}
    assert items["BOLT-M8-S"].erp_item_id == CATALOG_BY_SKU["BOLT-M8-S"].erp_item_id


async def test_credit_standing_comes_from_suiteql(client: NetSuiteClient) -> None:
    globex = await client.get_customer_credit("3002")
    assert (globex.credit_limit, globex.balance, globex.overdue_balance, globex.unbilled_orders) == (
        Money.of("10000", "USD"), Money.of("9400", "USD"), Money.of("1200", "USD"), Money.of("450", "USD"))  # fmt: skip
    assert (await client.get_customer_credit("3003")).on_credit_hold is True


async def test_order_to_cash_moves_the_sales_order_through_its_statuses(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    order_id = await post_order(client, "1001", {"BOLT-M8-S": 2, "NUT-M8-M": 3})
    order = await client.get_sales_order(external_id="SO-1001")
    assert order.erp_order_id == order_id
    assert order.status is SalesOrderStatus.PENDING_FULFILLMENT
    before = await client.get_customer_credit("3001")
    assert before.unbilled_orders - Money.of("3000", "USD") == order.total

    await client.fulfill_sales_order(
        order_id, shipment({"BOLT-M8-S": 2, "NUT-M8-M": 1}, "1Z1"), external_id="IF-1001-1"
    )
    assert (await client.get_sales_order(order_id)).status is SalesOrderStatus.PARTIALLY_FULFILLED
    await client.fulfill_sales_order(order_id, shipment({"NUT-M8-M": 2}, "1Z2"), external_id="IF-1001-2")
    assert (await client.get_sales_order(order_id)).status is SalesOrderStatus.PENDING_BILLING

    invoice = await client.invoice_sales_order(order_id, external_id="INV-1001")
    assert invoice.erp_order_id == order_id
    assert invoice.total == order.total
    assert sorted((ln.sku, ln.quantity) for ln in invoice.lines) == [("BOLT-M8-S", 2), ("NUT-M8-M", 3)]
    final = await client.get_sales_order(order_id)
    assert final.status is SalesOrderStatus.BILLED
    assert all(ln.quantity_billed == ln.quantity for ln in final.lines)
    after = await client.get_customer_credit("3001")
    assert after.balance == before.balance + invoice.total
    state = await netsuite_state(sandbox)
    fulfillments = with_external_id(state, "itemFulfillment", "IF-1001-1")
    assert fulfillments[0]["package"]["items"][0]["packageTrackingNumber"] == "1Z1"


async def test_upserting_the_same_order_twice_keeps_one_sales_order(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    first = await post_order(client, "1002", {"GLOVE-NIT-S": 1})
    second = await post_order(client, "1002", {"GLOVE-NIT-S": 1})
    assert first == second
    assert len(with_external_id(await netsuite_state(sandbox), "salesOrder", "SO-1002")) == 1


async def test_closing_a_sales_order_twice_leaves_it_closed(client: NetSuiteClient) -> None:
    order_id = await post_order(client, "1003", {"TAPE-PKG-S": 1, "BOX-12-M": 2})
    closed = await client.close_sales_order(order_id)
    again = await client.close_sales_order(order_id)
    assert closed.status is again.status is SalesOrderStatus.CLOSED
    assert all(line.is_closed for line in again.lines)
    with pytest.raises(ValidationRejectedError):
        await client.fulfill_sales_order(order_id, shipment({"TAPE-PKG-S": 1}), external_id="IF-1003")


async def test_a_return_is_authorized_received_and_credited(client: NetSuiteClient, sandbox: httpx.AsyncClient) -> None:
    order_id = await post_order(client, "1004", {"BOLT-M8-S": 3})
    await client.fulfill_sales_order(order_id, shipment({"BOLT-M8-S": 3}), external_id="IF-1004")
    await client.invoice_sales_order(order_id, external_id="INV-1004")
    balance = (await client.get_customer_credit("3001")).balance
    rma = await client.create_return_authorization(order_id, [ReturnLine(sku="BOLT-M8-S", quantity=2)],
                                                   external_id="RMA-1004")  # fmt: skip
    receipt = await client.receive_return(rma.erp_id, [ReturnLine(sku="BOLT-M8-S", quantity=2)], external_id="IR-1004")
    memo = await client.create_credit_memo(rma.erp_id, external_id="CM-1004")
    assert (rma.record_type, receipt.record_type, memo.record_type) == (
        "returnAuthorization", "itemReceipt", "creditMemo")  # fmt: skip
    state = await netsuite_state(sandbox)
    assert with_external_id(state, "returnAuthorization", "RMA-1004")[0]["status"]["id"] == "Refunded"
    credited = Decimal(with_external_id(state, "creditMemo", "CM-1004")[0]["total"])
    assert credited == 2 * CATALOG_BY_SKU["BOLT-M8-S"].price
    assert (await client.get_customer_credit("3001")).balance == balance - Money.of(credited, "USD")
    with pytest.raises(ValidationRejectedError):
        await client.create_return_authorization(order_id, [ReturnLine(sku="BOLT-M8-S", quantity=2)],
                                                 external_id="RMA-1004-B")  # fmt: skip


async def test_governance_limit_is_the_account_concurrency(client: NetSuiteClient) -> None:
    assert await client.get_concurrency_limit() == 5


# ------------------------------------------------------------------- rejections


async def test_unknown_item_is_rejected_permanently_with_its_error_path(client: NetSuiteClient) -> None:
    with pytest.raises(ValidationRejectedError) as caught:
        await client.upsert_sales_order(make_order("1005", {"BOLT-M8-S": 1}), external_id="SO-1005",
                                        erp_customer_id="3001", item_ids={"BOLT-M8-S": "999999"})  # fmt: skip
    assert caught.value.vendor_code == "INVALID_CONTENT"
    assert caught.value.details["error_path"] == "item.items[0].item"
    assert not caught.value.retryable


async def test_unknown_customer_is_rejected_with_entity_path(client: NetSuiteClient) -> None:
    with pytest.raises(ValidationRejectedError) as caught:
        await client.upsert_sales_order(make_order("1006", {"BOLT-M8-S": 1}), external_id="SO-1006",
                                        erp_customer_id="777", item_ids={"BOLT-M8-S": "1001"})  # fmt: skip
    assert caught.value.details["error_path"] == "entity"


async def test_wrong_token_secret_is_invalid_login(http: httpx.AsyncClient, settings: Settings) -> None:
    wrong = settings.netsuite.model_copy(update={"auth_method": "tba", "token_secret": SecretStr("not-the-secret")})
    with pytest.raises(AuthenticationError) as caught:
        await NetSuiteClient(http, wrong).get_customer_credit("3001")
    assert caught.value.vendor_code == "INVALID_LOGIN"


async def test_replayed_nonce_is_invalid_login(
    http: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orderflow.adapters.netsuite as adapter

    monkeypatch.setattr(adapter.secrets, "token_hex", lambda _n: "same-nonce-every-time")
    client = NetSuiteClient(http, settings.netsuite.model_copy(update={"auth_method": "tba"}))
    await client.find_items_by_sku(["BOLT-M8-S"])  # one request
    with pytest.raises(AuthenticationError) as caught:
        await client.find_items_by_sku(["BOLT-M8-S"])
    assert caught.value.vendor_code == "INVALID_LOGIN"


async def test_a_rejected_bearer_token_is_renewed_once(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    client = NetSuiteClient(http, settings.netsuite)
    await client.get_customer_credit("3001")
    client._token = "revoked-token"  # as if NetSuite had revoked the cached token
    assert (await client.get_customer_credit("3002")).erp_customer_id == "3002"
    assert (await netsuite_state(sandbox))["auth"]["tokens_issued"] == 2


async def test_expired_bearer_token_is_invalid_login(settings: Settings, sandbox: httpx.AsyncClient) -> None:
    base = settings.netsuite.base_url
    async with httpx.AsyncClient() as raw:
        client = NetSuiteClient(raw, settings.netsuite)
        await client.get_customer_credit("3001")
        token = client._token
        await sandbox.post("/sandbox/clock/advance", json={"seconds": 3601})
        response = await raw.get(f"{base}/services/rest/record/v1/customer/3001", headers={
            "Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 401
    assert response.json()["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"


# ---------------------------------------------------------------- concurrency


async def test_over_the_concurrency_limit_calls_are_throttled_then_recover(
    http: httpx.AsyncClient, ns_settings: NetSuiteSettings, sandbox: httpx.AsyncClient
) -> None:
    await sandbox.put("/netsuite/sandbox/governance", json={"service_seconds": 0.1})
    greedy = NetSuiteClient(http, ns_settings.model_copy(update={"max_concurrency": 12}))
    await greedy.get_customer_credit("3001")  # sign in (and load currencies) before the burst
    results = await asyncio.gather(*(greedy.get_customer_credit("3002") for _ in range(12)))
    assert {r.erp_customer_id for r in results} == {"3002"}
    governance = (await netsuite_state(sandbox))["governance"]
    assert governance["rejected_over_limit"] > 0
    assert governance["peak_in_flight"] <= 5


async def test_client_semaphore_keeps_under_the_account_limit(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    await sandbox.put("/netsuite/sandbox/governance", json={"service_seconds": 0.05})
    await asyncio.gather(*(client.get_customer_credit("3001") for _ in range(10)))
    assert (await netsuite_state(sandbox))["governance"]["rejected_over_limit"] == 0


async def test_slow_invalid_login_during_a_burst_is_retried_not_fatal(
    http: httpx.AsyncClient, ns_settings: NetSuiteSettings, sandbox: httpx.AsyncClient
) -> None:
    await sandbox.put("/netsuite/sandbox/governance", json={
        "service_seconds": 0.1, "over_limit_answer": "slow_login", "slow_login_seconds": 0.05})  # fmt: skip
    greedy = NetSuiteClient(http, ns_settings.model_copy(update={"max_concurrency": 10}))
    await greedy.get_customer_credit("3001")
    results = await asyncio.gather(*(greedy.get_customer_credit("3001") for _ in range(10)))
    assert len(results) == 10
    assert (await netsuite_state(sandbox))["governance"]["rejected_over_limit"] > 0


# ---------------------------------------------------------- lost responses


async def add_fault(sandbox: httpx.AsyncClient, **rule: Any) -> None:
    response = await sandbox.post("/sandbox/faults", json={"system": "netsuite", "hold_seconds": 0, **rule})
    response.raise_for_status()


async def test_lost_responses_leave_one_order_one_fulfillment_one_invoice(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    await add_fault(sandbox, kind="timeout_after_commit", method="PUT", path="*/salesOrder/eid:SO-1007", times=1)
    with pytest.raises(TransientError):
        await post_order(client, "1007", {"BOLT-M8-S": 2})
    order_id = await post_order(client, "1007", {"BOLT-M8-S": 2})

    await add_fault(sandbox, kind="timeout_after_commit", path="*!transform/itemFulfillment", times=1)
    with pytest.raises(TransientError):
        await client.fulfill_sales_order(order_id, shipment({"BOLT-M8-S": 2}), external_id="IF-1007")
    await client.fulfill_sales_order(order_id, shipment({"BOLT-M8-S": 2}), external_id="IF-1007")

    await add_fault(sandbox, kind="timeout_after_commit", path="*!transform/invoice", times=1)
    with pytest.raises(TransientError):
        await client.invoice_sales_order(order_id, external_id="INV-1007")
    invoice = await client.invoice_sales_order(order_id, external_id="INV-1007")

    state = await netsuite_state(sandbox)
    assert len(with_external_id(state, "salesOrder", "SO-1007")) == 1
    assert len(with_external_id(state, "itemFulfillment", "IF-1007")) == 1
    assert [i["id"] for i in with_external_id(state, "invoice", "INV-1007")] == [invoice.erp_invoice_id]


async def test_a_read_timeout_after_commit_is_transient(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    impatient = NetSuiteClient(http, settings.netsuite.model_copy(update={"timeout_seconds": 0.3}))
    await impatient.find_items_by_sku(["BOLT-M8-S"])
    await add_fault(sandbox, kind="timeout_after_commit", method="PUT", path="*/customer/eid:*", times=1,
                    hold_seconds=1.0)  # fmt: skip
    customer = Customer(name="Ada Lovelace", email="ada@example.com")
    with pytest.raises(TransientError) as caught:
        await impatient.upsert_customer(customer, external_id="shopify-customer-1")
    assert caught.value.vendor_code == "ReadTimeout"
    assert len(with_external_id(await netsuite_state(sandbox), "customer", "shopify-customer-1")) == 1


async def test_every_create_retried_through_lost_responses_leaves_one_record_per_external_id(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    await add_fault(sandbox, kind="timeout_after_commit", rate=0.3, mutating_only=True)
    numbers = [f"20{n:02d}" for n in range(6)]
    for number in numbers:
        customer = Customer(name=f"Buyer {number}", email=f"b{number}@example.com")
        await until_done(lambda c=customer, n=number: client.upsert_customer(c, external_id=f"CUST-{n}"))
        order_id = await until_done(lambda n=number: post_order(client, n, {"BOLT-M8-S": 1, "WASH-M8-L": 2}))
        await until_done(lambda o=order_id, n=number: client.fulfill_sales_order(
            o, shipment({"BOLT-M8-S": 1, "WASH-M8-L": 2}, f"1Z{n}"), external_id=f"IF-{n}"))  # fmt: skip
        await until_done(lambda o=order_id, n=number: client.invoice_sales_order(o, external_id=f"INV-{n}"))
    faults = (await sandbox.get("/sandbox/faults")).json()
    assert faults[0]["fired"] > 0
    state = await netsuite_state(sandbox)
    for number in numbers:
        for record_type, prefix in (("customer", "CUST"), ("salesOrder", "SO"), ("itemFulfillment", "IF"),
                                    ("invoice", "INV")):  # fmt: skip
            assert len(with_external_id(state, record_type, f"{prefix}-{number}")) == 1, (record_type, number)
    assert len(state["records"]["salesOrder"]) == len(state["records"]["invoice"]) == len(numbers)
    assert {o["status"]["id"] for o in state["records"]["salesOrder"]} == {"Billed"}


# ---------------------------------------------------------------------- async


async def test_async_request_runs_as_a_job_and_a_repeated_key_points_at_it(
    client: NetSuiteClient, sandbox: httpx.AsyncClient
) -> None:
    body = {"externalId": "SO-ASYNC-1", "entity": {"id": "3001"}, "item": {"items": [
        {"item": {"id": "1001"}, "quantity": 1}]}}  # fmt: skip
    job_id = await client.submit_async("POST", "salesOrder", body, idempotency_key="key-1")
    with pytest.raises(ConflictError) as caught:
        await client.submit_async("POST", "salesOrder", body, idempotency_key="key-1")
    assert caught.value.vendor_code == "IDEMPOTENCY_ERROR"
    assert caught.value.status_code == 400
    assert caught.value.details["location"].endswith(f"/async/v1/job/{job_id}")
    await sandbox.post("/sandbox/tick")
    job = await client.get_async_job(job_id)
    assert (job.completed, job.progress) == (True, "succeeded")
    state = await netsuite_state(sandbox)
    assert [o["id"] for o in with_external_id(state, "salesOrder", "SO-ASYNC-1")] == [job.record_id]
