"""Canonical models refuse bad data with errors that name the offending field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from orderflow.canonical import (
    Address,
    Channel,
    CreditStanding,
    Customer,
    Money,
    Order,
    OrderLine,
    PaymentTerms,
    Return,
    ReturnLine,
)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def order_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "shopify",
        "channel_order_id": "6200407294252",
        "order_number": "#1042",
        "placed_at": datetime(2025, 1, 24, 4, 10, 15, tzinfo=UTC),
        "currency": "USD",
        "customer": {"name": "Ada L", "email": "buyer@example.com", "channel_customer_id": "207119551"},
        "ship_to": {"name": "Ada L", "line1": "1 Main St", "city": "Austin", "region": "TX",
                    "postal_code": "78701", "country": "us"},
        "lines": [
            {"line_id": "15518907892012", "sku": "TSHIRT-001", "quantity": 2, "unit_price": usd("99.00"),
             "discounts": [{"amount": usd("14.10")}],
             "tax_lines": [{"title": "State Tax", "rate": Decimal("0.06"), "amount": usd("10.03")}]},
        ],
        "shipping": [{"title": "Standard", "amount": usd("22.00")}],
        "total": usd("215.93"),
    }  # fmt: skip
    data.update(overrides)
    return data


def field_of(error: ValidationError) -> tuple[int | str, ...]:
    return error.errors()[0]["loc"]


def test_an_order_knows_its_saga_key_and_totals() -> None:
    order = Order.model_validate(order_data())
    assert order.key == "order:shopify:6200407294252"
    assert order.subtotal == usd("183.90")
    assert order.shipping_total == usd("22.00")
    assert order.tax_total == usd("10.03")
    assert order.subtotal + order.shipping_total + order.tax_total == order.total
    assert order.ship_to.country == "US"


def test_an_order_without_lines_is_refused_naming_lines() -> None:
    with pytest.raises(ValidationError) as error:
        Order.model_validate(order_data(lines=[]))
    assert field_of(error.value) == ("lines",)


def test_an_empty_sku_is_refused_naming_the_line() -> None:
    lines = order_data()["lines"]
    lines[0]["sku"] = ""
    with pytest.raises(ValidationError) as error:
        Order.model_validate(order_data(lines=lines))
    assert field_of(error.value) == ("lines", 0, "sku")


def test_a_zero_quantity_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        OrderLine(line_id="1", sku="A-1", quantity=0, unit_price=usd("1"))
    assert field_of(error.value) == ("quantity",)


def test_a_line_in_another_currency_is_refused_naming_where() -> None:
    lines = order_data()["lines"]
    lines[0]["unit_price"] = Money.of("99.00", "EUR")
    with pytest.raises(ValidationError, match=r"lines\.0\.unit_price is in EUR"):
        Order.model_validate(order_data(lines=lines))


def test_a_naive_placed_at_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        Order.model_validate(order_data(placed_at=datetime(2025, 1, 24, 4, 10)))
    assert field_of(error.value) == ("placed_at",)


def test_unknown_fields_are_refused_so_vendor_fields_cannot_leak_in() -> None:
    with pytest.raises(ValidationError) as error:
        Address(name="A", line1="1 Main", city="Austin", country="US", province_code="TX")  # type: ignore[call-arg]
    assert field_of(error.value) == ("province_code",)
    assert error.value.errors()[0]["type"] == "extra_forbidden"


def test_a_terms_customer_needs_a_credit_limit() -> None:
    with pytest.raises(ValidationError, match="credit_limit is required"):
        Customer(name="Acme", terms=PaymentTerms.TERMS)
    acme = Customer(name="Acme", terms=PaymentTerms.TERMS, credit_limit=usd("50000"))
    assert acme.credit_limit == usd("50000")


def test_available_credit_is_limit_minus_balance_minus_open_orders() -> None:
    standing = CreditStanding(
        erp_customer_id="3001",
        credit_limit=usd("50000"),
        balance=usd("12000.50"),
        overdue_balance=usd("0"),
        unbilled_orders=usd("3000"),
    )
    assert standing.available == usd("34999.50")


def test_a_return_knows_its_saga_key() -> None:
    rma = Return(
        channel=Channel.SHOPIFY,
        return_id="RMA-7",
        order_key="order:shopify:1",
        lines=[ReturnLine(sku="A-1", quantity=1)],
        requested_at=datetime(2025, 2, 1, tzinfo=UTC),
    )
    assert rma.key == "return:shopify:RMA-7"
