"""NetSuite payloads to canonical models and back, using the shapes in api_facts §3."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    TransientError,
    ValidationRejectedError,
)
from orderflow.adapters.netsuite import (
    credit_standing_from_row,
    error_from_response,
    invoice_from_record,
    sales_order_from_record,
    sales_order_payload,
)
from orderflow.canonical import Address, Channel, Customer, Money, Order, OrderLine, SalesOrderStatus, ShippingCharge
from orderflow.sandbox.netsuite_suiteql import SuiteQLError, execute, parse


def test_suiteql_credit_row_becomes_credit_standing() -> None:
    row = {"links": [], "id": "1234", "entityid": "ACME", "creditlimit": "5000", "balancesearch": "1200.5",
           "overduebalancesearch": "0", "unbilledorderssearch": "300", "oncredithold": "F"}  # fmt: skip
    standing = credit_standing_from_row(row, "USD")
    assert standing.erp_customer_id == "1234"
    assert standing.credit_limit == Money.of("5000", "USD")
    assert standing.balance == Money.of("1200.5", "USD")
    assert standing.unbilled_orders == Money.of("300", "USD")
    assert standing.available == Money.of("3499.5", "USD")
    assert standing.on_credit_hold is False


def test_missing_credit_columns_read_as_zero_and_hold_as_true() -> None:
    standing = credit_standing_from_row({"id": "7", "oncredithold": "T"}, "USD")
    assert standing.credit_limit == Money.zero("USD")
    assert standing.on_credit_hold is True


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("GET", "http://x/"))


def test_invalid_content_is_a_permanent_rejection_with_its_error_path() -> None:
    body = {"type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html#sec10.4.1", "title": "Bad Request",
            "status": 400, "o:errorDetails": [{
                "detail": "Error while accessing resource: You have entered an Invalid Field Value 9999 for the "
                          "following field: item", "o:errorCode": "INVALID_CONTENT",
                "o:errorPath": "item.items[0].item"}]}  # fmt: skip
    error = error_from_response(_response(400, body))
    assert isinstance(error, ValidationRejectedError)
    assert error.vendor_code == "INVALID_CONTENT"
    assert error.details["error_path"] == "item.items[0].item"
    assert "Invalid Field Value 9999" in error.message


def test_invalid_login_is_an_authentication_error() -> None:
    body = {"type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html", "title": "Unauthorized", "status": 401,
            "o:errorDetails": [{"detail": "Invalid login attempt.", "o:errorCode": "INVALID_LOGIN"}]}  # fmt: skip
    error = error_from_response(_response(401, body))
    assert isinstance(error, AuthenticationError)
    assert error.vendor_code == "INVALID_LOGIN"


def test_idempotency_conflict_keeps_the_original_job_location() -> None:
    body = {"title": "Conflict", "status": 400, "o:errorDetails": [
        {"detail": "A request with the same idempotency key is already submitted.",
         "o:errorCode": "IDEMPOTENCY_ERROR"}]}  # fmt: skip
    error = error_from_response(_response(400, body, {"Location": "/services/rest/async/v1/job/42"}))
    assert isinstance(error, ConflictError)
    assert error.details["location"].endswith("/job/42")


@pytest.mark.parametrize(("status", "kind"), [(404, NotFoundError), (503, TransientError), (504, TransientError)])
def test_other_statuses_follow_the_shared_classification(status: int, kind: type[Exception]) -> None:
    assert isinstance(error_from_response(_response(status, {"o:errorDetails": []})), kind)


def _record() -> dict[str, object]:
    return {
        "id": "4321", "externalId": "SHOP-1", "entity": {"id": "3001"}, "currency": {"id": "1"},
        "orderStatus": {"id": "E", "refName": "Pending Billing/Partially Fulfilled"}, "total": 57.25,
        "item": {"items": [
            {"line": 1, "item": {"id": "1001", "refName": "BOLT-M8-S"}, "quantity": 2, "rate": 18.5,
             "amount": 37.0, "quantityFulfilled": 2, "quantityBilled": 1, "isClosed": False},
            {"line": 3, "item": {"id": "1008", "refName": "NUT-M8-M"}, "quantity": 1, "rate": 20.25,
             "amount": 20.25, "quantityFulfilled": 0, "quantityBilled": 0, "isClosed": True},
        ]},
    }  # fmt: skip


def test_sales_order_record_becomes_canonical_sales_order() -> None:
    order = sales_order_from_record(_record(), "USD")
    assert order.status is SalesOrderStatus.PARTIALLY_FULFILLED
    assert order.total == Money.of("57.25", "USD")
    assert [
        (ln.line_number, ln.sku, ln.quantity_fulfilled, ln.quantity_billed, ln.is_closed) for ln in order.lines
    ] == [
        (1, "BOLT-M8-S", 2, 1, False),
        (3, "NUT-M8-M", 0, 0, True),
    ]


def test_status_falls_back_to_the_status_name() -> None:
    record = {**_record(), "orderStatus": None, "status": {"id": "Billed", "refName": "Billed"}}
    assert sales_order_from_record(record, "USD").status is SalesOrderStatus.BILLED


def test_invoice_record_becomes_canonical_invoice() -> None:
    record = {"id": "5001", "createdFrom": {"id": "4321"}, "externalId": "INV-1", "tranDate": "2025-08-01",
              "total": 37.0, "item": {"items": [{"item": {"id": "1001", "refName": "BOLT-M8-S"}, "quantity": 2,
                                                 "amount": 37.0}]}}  # fmt: skip
    invoice = invoice_from_record(record, "USD")
    assert invoice.erp_order_id == "4321"
    assert invoice.issued_on.isoformat() == "2025-08-01"
    assert invoice.lines[0].amount == Money.of("37", "USD")


def _order() -> Order:
    usd = "USD"
    return Order(
        channel=Channel.SHOPIFY, channel_order_id="6200407294252", order_number="#1042",
        placed_at=datetime(2025, 8, 1, 15, 0, tzinfo=UTC), currency=usd,
        customer=Customer(name="Ada Lovelace", email="ada@example.com"),
        ship_to=Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US"),
        lines=[OrderLine(line_id="1", sku="BOLT-M8-S", quantity=2, unit_price=Money.of("19.99", usd))],
        shipping=[ShippingCharge(title="Ground", amount=Money.of("5.00", usd))],
        total=Money.of("44.98", usd),
    )  # fmt: skip


def test_order_becomes_sales_order_body_with_item_ids_and_address() -> None:
    body = sales_order_payload(_order(), erp_customer_id="2001", item_ids={"BOLT-M8-S": "1001"}, subsidiary_id="1",
                               currency_id="1", location_id="6")  # fmt: skip
    assert body["entity"] == {"id": "2001"}
    assert body["tranDate"] == "2025-08-01"
    assert body["item"]["items"] == [{"item": {"id": "1001"}, "quantity": 2, "rate": Decimal("19.99"),
                                      "amount": Decimal("39.98")}]  # fmt: skip
    assert body["shippingAddress"]["zip"] == "78701"
    assert body["location"] == {"id": "6"}
    assert "externalId" not in body


def test_order_with_unmapped_sku_is_rejected_before_any_call() -> None:
    with pytest.raises(ValidationRejectedError, match="BOLT-M8-S"):
        sales_order_payload(_order(), erp_customer_id="2001", item_ids={}, subsidiary_id="1", currency_id="1",
                            location_id=None)  # fmt: skip


def test_suiteql_subset_filters_sorts_and_keeps_strings() -> None:
    rows = [{"id": "3", "itemid": "B"}, {"id": "1", "itemid": "O'X"}, {"id": "2", "itemid": "C"}]
    query = parse("select id, ItemId from item where itemid in ('O''X', 'C') order by id desc")
    assert execute(query, rows, {"id", "itemid"}) == [{"id": "2", "itemid": "C"}, {"id": "1", "itemid": "O'X"}]


@pytest.mark.parametrize("text", ["DELETE FROM item", "SELECT id FROM item WHERE id = 1 OR id = 2",
                                  "SELECT id FROM item; DROP TABLE item"])  # fmt: skip
def test_suiteql_refuses_anything_outside_the_subset(text: str) -> None:
    with pytest.raises(SuiteQLError):
        execute(parse(text), [], {"id"})


def test_suiteql_names_an_unknown_column() -> None:
    with pytest.raises(SuiteQLError, match="Field 'nope' for record 'item' was not found"):
        execute(parse("SELECT nope FROM item"), [], {"id"})
