"""Shopify webhook bodies (the real shapes of api_facts §1.3) mapped to canonical models."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from orderflow.adapters.errors import ValidationRejectedError
from orderflow.adapters.shopify import (
    cancellation_from_webhook,
    order_from_graphql,
    order_from_webhook,
    refund_from_webhook,
)
from orderflow.canonical import Channel, FinancialStatus, Money

ORDERS_CREATE: dict[str, Any] = {
    "id": 6200407294252,
    "admin_graphql_api_id": "gid://shopify/Order/6200407294252",
    "name": "#1042",
    "order_number": 1042,
    "email": "buyer@example.com",
    "created_at": "2025-01-23T23:10:15-05:00",
    "currency": "USD",
    "presentment_currency": "USD",
    "total_price": "186.90",
    "subtotal_price": "164.90",
    "total_tax": "0.00",
    "total_discounts": "34.10",
    "financial_status": "paid",
    "fulfillment_status": None,
    "cancelled_at": None,
    "cancel_reason": None,
    "tax_lines": [{"title": "State Tax", "rate": 0.06, "price": "9.89"}],
    "discount_applications": [
        {
            "type": "manual",
            "value": "15.0",
            "value_type": "percentage",
            "allocation_method": "across",
            "target_type": "line_item",
        }
    ],
    "line_items": [
        {
            "id": 15518907892012,
            "admin_graphql_api_id": "gid://shopify/LineItem/15518907892012",
            "variant_id": 50398373085484,
            "product_id": 9782123692332,
            "sku": "TSHIRT-001",
            "name": "T-Shirt - M",
            "quantity": 1,
            "price": "99.00",
            "fulfillable_quantity": 1,
            "fulfillment_status": None,
            "requires_shipping": True,
            "tax_lines": [],
            "discount_allocations": [{"amount": "14.10", "discount_application_index": 0}],
        }
    ],
    "shipping_lines": [
        {
            "id": 4946484101420,
            "title": "Standard",
            "code": "custom",
            "price": "22.00",
            "discounted_price": "22.00",
            "tax_lines": [],
            "discount_allocations": [],
        }
    ],
    "shipping_address": {
        "first_name": "Ada",
        "last_name": "L",
        "address1": "1 Main St",
        "address2": None,
        "city": "Austin",
        "province_code": "TX",
        "zip": "78701",
        "country_code": "US",
        "phone": None,
    },
    "customer": {
        "id": 207119551,
        "email": "buyer@example.com",
        "admin_graphql_api_id": "gid://shopify/Customer/207119551",
    },
}

REFUNDS_CREATE: dict[str, Any] = {
    "id": 509562969,
    "order_id": 450789469,
    "created_at": "2025-02-01T10:00:00-05:00",
    "note": "RMA-7",
    "restock": True,
    "admin_graphql_api_id": "gid://shopify/Refund/509562969",
    "refund_line_items": [
        {
            "id": 104689539,
            "line_item_id": 703073504,
            "quantity": 1,
            "restock_type": "return",
            "location_id": 487838322,
            "subtotal": 195.66,
            "total_tax": 3.98,
            "line_item": {"id": 703073504, "sku": "IPOD2008BLACK", "variant_id": 457924702},
        }
    ],
    "transactions": [
        {
            "id": 179259969,
            "kind": "refund",
            "amount": "209.00",
            "gateway": "bogus",
            "status": "success",
            "parent_id": 801038806,
        }
    ],
    "order_adjustments": [],
}


def test_orders_create_maps_identity_money_and_address() -> None:
    order = order_from_webhook(ORDERS_CREATE)

    assert order.channel is Channel.SHOPIFY
    assert order.channel_order_id == "6200407294252"
    assert order.key == "order:shopify:6200407294252"
    assert order.order_number == "#1042"
    assert order.placed_at == datetime(2025, 1, 24, 4, 10, 15, tzinfo=UTC)
    assert order.total == Money.of("186.90", "USD")
    assert order.financial_status is FinancialStatus.PAID
    assert order.customer.channel_customer_id == "207119551"
    assert order.customer.email == "buyer@example.com"
    assert order.ship_to.name == "Ada L"
    assert (order.ship_to.line1, order.ship_to.city, order.ship_to.region, order.ship_to.country) == (
        "1 Main St",
        "Austin",
        "TX",
        "US",
    )
    assert order.ship_to.postal_code == "78701"


def test_orders_create_keeps_line_discounts_taxes_and_shipping() -> None:
    order = order_from_webhook(ORDERS_CREATE)

    (line,) = order.lines
    assert (line.line_id, line.sku, line.quantity) == ("15518907892012", "TSHIRT-001", 1)
    assert line.unit_price == Money.of("99.00", "USD")
    assert [d.amount for d in line.discounts] == [Money.of("14.10", "USD")]
    assert line.net == Money.of("84.90", "USD")
    (tax,) = order.tax_lines
    assert (tax.title, tax.rate, tax.amount) == ("State Tax", Decimal("0.06"), Money.of("9.89", "USD"))
    (shipping,) = order.shipping
    assert (shipping.title, shipping.code, shipping.amount) == ("Standard", "custom", Money.of("22.00", "USD"))
    assert order.ship_method == "custom"


def test_orders_create_with_an_empty_sku_is_rejected_naming_the_line() -> None:
    payload = copy.deepcopy(ORDERS_CREATE)
    payload["line_items"][0]["sku"] = ""

    with pytest.raises(ValidationRejectedError) as caught:
        order_from_webhook(payload)

    assert caught.value.details == {"field": "line_items[0].sku"}
    assert "empty SKU" in caught.value.message
    assert "15518907892012" in caught.value.message


def test_orders_create_without_a_shipping_address_is_rejected_naming_the_field() -> None:
    payload = copy.deepcopy(ORDERS_CREATE)
    payload["shipping_address"] = None

    with pytest.raises(ValidationRejectedError) as caught:
        order_from_webhook(payload)

    assert caught.value.details == {"field": "shipping_address"}


def test_orders_create_with_a_bad_country_is_rejected_naming_the_field() -> None:
    payload = copy.deepcopy(ORDERS_CREATE)
    payload["shipping_address"]["country_code"] = "USA"

    with pytest.raises(ValidationRejectedError) as caught:
        order_from_webhook(payload)

    assert caught.value.details == {"field": "shipping_address.country"}


def test_guest_order_takes_the_customer_name_from_the_shipping_address() -> None:
    payload = copy.deepcopy(ORDERS_CREATE)
    payload["customer"] = None

    order = order_from_webhook(payload)

    assert order.customer.name == "buyer@example.com"
    assert order.customer.channel_customer_id is None


def test_orders_cancelled_maps_to_a_cancellation_and_still_to_an_order() -> None:
    payload = copy.deepcopy(ORDERS_CREATE)
    payload.update(
        {"cancelled_at": "2025-01-24T09:00:00-05:00", "cancel_reason": "customer", "financial_status": "refunded"}
    )

    cancellation = cancellation_from_webhook(payload)
    order = order_from_webhook(payload)

    assert cancellation.order_key == "order:shopify:6200407294252"
    assert cancellation.cancelled_at == datetime(2025, 1, 24, 14, 0, tzinfo=UTC)
    assert cancellation.reason == "customer"
    assert cancellation.financial_status is FinancialStatus.REFUNDED
    assert order.financial_status is FinancialStatus.REFUNDED


def test_an_order_that_is_not_cancelled_is_not_a_cancellation() -> None:
    with pytest.raises(ValidationRejectedError):
        cancellation_from_webhook(ORDERS_CREATE)


def test_refunds_create_maps_lines_restock_and_money_from_transactions() -> None:
    refund = refund_from_webhook(REFUNDS_CREATE, currency="USD")

    assert refund.order_key == "order:shopify:450789469"
    assert refund.total == Money.of("209.00", "USD")
    assert refund.note == "RMA-7"
    (line,) = refund.lines
    assert (line.line_id, line.sku, line.quantity, line.restock) == ("703073504", "IPOD2008BLACK", 1, True)
    # REST sends these two as JSON numbers; they must come out exact.
    assert line.amount == Money.of("199.64", "USD")


def test_refunds_create_without_any_currency_asks_for_one() -> None:
    with pytest.raises(ValidationRejectedError) as caught:
        refund_from_webhook(REFUNDS_CREATE)

    assert caught.value.details == {"field": "currency"}


def _graphql_node() -> dict[str, Any]:
    money = {"shopMoney": {"amount": "10.00", "currencyCode": "USD"}}
    return {
        "id": "gid://shopify/Order/6200407294001",
        "legacyResourceId": "6200407294001",
        "name": "#1001",
        "email": "ada@example.com",
        "note": None,
        "createdAt": "2026-03-01T12:00:00Z",
        "cancelledAt": None,
        "currencyCode": "USD",
        "displayFinancialStatus": "PARTIALLY_REFUNDED",
        "customer": {"id": "gid://shopify/Customer/1", "legacyResourceId": "1", "displayName": "Ada", "email": None},
        "shippingAddress": {
            "name": "Ada Lovelace",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "company": None,
            "address1": "1 Main St",
            "address2": None,
            "city": "Austin",
            "provinceCode": "TX",
            "zip": "78701",
            "countryCodeV2": "US",
            "phone": None,
        },
        "billingAddress": None,
        "totalPriceSet": {"shopMoney": {"amount": "27.95", "currencyCode": "USD"}},
        "taxLines": [],
        "lineItems": {
            "pageInfo": {"hasNextPage": False},
            "nodes": [
                {
                    "id": "gid://shopify/LineItem/77",
                    "sku": "BOLT-M8-S",
                    "name": "Hex bolt",
                    "quantity": 2,
                    "requiresShipping": True,
                    "originalUnitPriceSet": money,
                    "discountAllocations": [
                        {
                            "allocatedAmountSet": {"shopMoney": {"amount": "2.00", "currencyCode": "USD"}},
                            "discountApplication": {"index": 0, "code": "WELCOME10"},
                        }
                    ],
                    "taxLines": [],
                }
            ],
        },
        "shippingLines": {
            "nodes": [
                {
                    "title": "Standard",
                    "code": "standard",
                    "originalPriceSet": {"shopMoney": {"amount": "9.95", "currencyCode": "USD"}},
                    "discountAllocations": [],
                    "taxLines": [],
                }
            ]
        },
        "fulfillmentOrders": {
            "nodes": [{"assignedLocation": {"location": {"id": "gid://shopify/Location/72000000008"}}}]
        },
    }


def test_graphql_order_maps_numeric_ids_discount_codes_and_location() -> None:
    order = order_from_graphql(_graphql_node())

    assert order.channel_order_id == "6200407294001"
    assert order.financial_status is FinancialStatus.PARTIALLY_REFUNDED
    (line,) = order.lines
    assert line.line_id == "77"
    assert line.discounts[0].code == "WELCOME10"
    assert line.net == Money.of("18.00", "USD")
    assert order.location_id == "72000000008"
    assert order.ship_method == "standard"


def test_graphql_order_with_a_blank_sku_is_rejected_naming_the_line() -> None:
    node = _graphql_node()
    node["lineItems"]["nodes"][0]["sku"] = None

    with pytest.raises(ValidationRejectedError) as caught:
        order_from_graphql(node)

    assert caught.value.details == {"field": "lineItems[0].sku"}
