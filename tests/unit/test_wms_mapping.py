"""Mapping between ShipBob payloads and canonical models, and ShipBob errors to orderflow's error classes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orderflow.adapters.errors import AuthenticationError, RateLimitedError, TransientError, ValidationRejectedError
from orderflow.adapters.wms import (
    cancellation_from_payload,
    error_from_response,
    fulfillment_order_from_payload,
    order_payload,
    shipment_from_webhook,
    shipments_from_webhook,
    stock_levels_from_item,
)
from orderflow.canonical import (
    Address,
    CancellationOutcome,
    FulfillmentLine,
    FulfillmentOrderRequest,
    FulfillmentStatus,
    Money,
)


def shipment(sid: int, location: int, lines: dict[str, int], *, status: str = "LabeledCreated") -> dict[str, Any]:
    return {
        "id": sid,
        "order_id": 100000001,
        "reference_id": "order:shopify:42",
        "status": status,
        "location": {"id": location, "name": "FC"},
        "tracking": {
            "carrier": "UPS",
            "carrier_service": "Ground",
            "tracking_number": f"1Z{sid}",
            "tracking_url": f"https://ups.example/{sid}",
            "shipping_date": "2026-02-03T10:00:00Z",
        },
        "products": [
            {"id": 1, "reference_id": sku, "inventory_items": [{"id": 1, "quantity": qty}]}
            for sku, qty in lines.items()
        ],
        "status_details": [],
    }


def order(status: str, shipments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": 100000001,
        "reference_id": "order:shopify:42",
        "status": status,
        "products": [
            {"id": 1, "reference_id": "BOLT-M8-S", "quantity": 3},
            {"id": 2, "sku": "NUT-M8-S", "quantity": 1},
        ],
        "shipments": shipments,
    }


def test_a_request_becomes_a_shipbob_order_with_reference_id_as_the_idempotency_key() -> None:
    request = FulfillmentOrderRequest(
        reference="order:shopify:42",
        order_number="1042",
        ship_to=Address(name="Ada", company="ACME", line1="1 Main", city="Austin", region="TX", country="us"),
        ship_method="Expedited",
        lines=[FulfillmentLine(sku="BOLT-M8-S", quantity=2, unit_price=Money.of("18.50", "USD"))],
        warehouse_id="11",
        channel="b2b",
        placed_at=datetime(2026, 2, 1, 12, 0, tzinfo=UTC),
    )

    body = order_payload(request)

    assert body["reference_id"] == "order:shopify:42"
    assert body["type"] == "B2B" and body["location_id"] == 11
    assert body["recipient"]["address"] == {
        "address1": "1 Main",
        "address2": None,
        "company_name": "ACME",
        "city": "Austin",
        "state": "TX",
        "zip_code": None,
        "country": "US",
    }
    assert body["products"] == [
        {"reference_id": "BOLT-M8-S", "sku": "BOLT-M8-S", "name": "BOLT-M8-S", "quantity": 2, "unit_price": 18.5}
    ]
    assert body["purchase_date"] == "2026-02-01T12:00:00Z"


def test_an_order_split_over_two_centres_maps_lines_warehouses_and_shipments() -> None:
    payload = order(
        "PartiallyFulfilled", [shipment(1, 8, {"BOLT-M8-S": 2}), shipment(2, 11, {"BOLT-M8-S": 1}, status="Processing")]
    )

    mapped = fulfillment_order_from_payload(payload)

    assert mapped.status is FulfillmentStatus.PARTIALLY_FULFILLED
    assert mapped.wms_order_id == "100000001"
    assert [(line.sku, line.quantity) for line in mapped.lines] == [("BOLT-M8-S", 3), ("NUT-M8-S", 1)]
    assert mapped.warehouse_ids == ["11", "8"]
    assert mapped.shipment_ids == ["1", "2"]
    assert mapped.exception_reason is None


def test_an_exception_shipment_carries_its_reason_and_on_hold_is_recognised() -> None:
    failing = shipment(1, 8, {"BOLT-M8-S": 3}, status="Exception")
    failing["status_details"] = [{"id": 1, "name": "OutOfStock", "description": "Out of stock: BOLT-M8-S"}]

    assert fulfillment_order_from_payload(order("Exception", [failing])).exception_reason == "Out of stock: BOLT-M8-S"
    held = fulfillment_order_from_payload(order("Processing", [shipment(1, 8, {"X": 1}, status="OnHold")]))
    assert held.status is FulfillmentStatus.ON_HOLD
    assert held.exception_reason == "shipment 1 is OnHold"


def test_order_shipped_for_one_parcel_of_a_split_order_maps_to_that_parcel() -> None:
    payload = order("PartiallyFulfilled", [shipment(7, 11, {"BOLT-M8-S": 1, "NUT-M8-S": 1})])

    mapped = shipment_from_webhook(payload)

    assert mapped.shipment_id == "7" and mapped.warehouse_id == "11"
    assert mapped.wms_order_id == "100000001" and mapped.reference == "order:shopify:42"
    assert (mapped.tracking.carrier, mapped.tracking.number, mapped.tracking.service) == ("UPS", "1Z7", "Ground")
    assert [(line.sku, line.quantity) for line in mapped.lines] == [("BOLT-M8-S", 1), ("NUT-M8-S", 1)]
    assert mapped.shipped_at == datetime(2026, 2, 3, 10, 0, tzinfo=UTC)


def test_a_body_without_a_labelled_shipment_is_not_a_shipment() -> None:
    unlabelled = shipment(1, 8, {"X": 1}, status="Processing")
    del unlabelled["tracking"]

    assert shipments_from_webhook(order("Processing", [unlabelled])) == []
    with pytest.raises(ValueError, match="no labelled shipment"):
        shipment_from_webhook(order("Processing", [unlabelled]))


@pytest.mark.parametrize(
    ("status", "order_status", "results", "outcome"),
    [
        ("Success", "Cancelled", [{"is_success": True}], CancellationOutcome.CANCELLED),
        ("Failure", "Cancelled", [{"is_success": False, "reason": "already cancelled"}], CancellationOutcome.CANCELLED),
        ("Failure", "Fulfilled", [{"is_success": False, "reason": "a label exists"}], CancellationOutcome.REFUSED),
        (
            "PartialSuccess",
            "PartiallyFulfilled",
            [{"is_success": True}, {"is_success": False, "reason": "labelled"}],
            CancellationOutcome.PARTIAL,
        ),
    ],
)
def test_cancel_results_map_to_outcomes(
    status: str, order_status: str, results: list[dict[str, Any]], outcome: CancellationOutcome
) -> None:
    payload = {"order_id": 1, "status": status, "order": {"status": order_status}, "canceled_shipment_results": results}

    mapped = cancellation_from_payload("1", payload)

    assert mapped.outcome is outcome
    if outcome is not CancellationOutcome.CANCELLED:
        assert mapped.reason is not None and mapped.reason in {r.get("reason") for r in results}


def test_stock_levels_keep_the_five_quantities_per_centre_and_filter() -> None:
    item = {
        "inventory_id": 9001,
        "sku": "BOLT-M8-S",
        "locations": [
            {
                "location_id": 8,
                "on_hand_quantity": 120,
                "committed_quantity": 7,
                "fulfillable_quantity": 113,
                "awaiting_quantity": 50,
                "internal_transfer_quantity": 0,
            },
            {
                "location_id": 11,
                "on_hand_quantity": 5,
                "committed_quantity": 0,
                "fulfillable_quantity": 5,
                "awaiting_quantity": 0,
                "internal_transfer_quantity": 0,
            },
        ],
    }

    levels = stock_levels_from_item(item)

    assert [(lv.warehouse_id, lv.on_hand, lv.committed, lv.fulfillable, lv.awaiting) for lv in levels] == [
        ("8", 120, 7, 113, 50),
        ("11", 5, 0, 5, 0),
    ]
    assert [lv.warehouse_id for lv in stock_levels_from_item(item, warehouse_id="11")] == ["11"]
    assert stock_levels_from_item(item, {"OTHER"}) == []


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, json=body, headers=headers, request=httpx.Request("POST", "https://api.shipbob.com/2026-01/order")
    )


def test_problem_details_become_a_validation_error_with_the_field_errors() -> None:
    body = {
        "type": "x",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {"recipient.address.city": ["The city field is required."]},
    }

    error = error_from_response(response(400, body))

    assert isinstance(error, ValidationRejectedError)
    assert error.details == {"recipient.address.city": ["The city field is required."]}
    assert "recipient.address.city" in error.message
    assert error.vendor_code == "One or more validation errors occurred."


def test_the_specs_bare_field_map_is_understood_too() -> None:
    error = error_from_response(response(422, {"reference_id": ["Duplicate."]}))

    assert isinstance(error, ValidationRejectedError)
    assert error.details == {"reference_id": ["Duplicate."]}


def test_throttles_auth_and_outages_keep_shipbobs_words() -> None:
    throttled = error_from_response(
        response(429, {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 25 seconds."}),
        retry_after=25,
    )
    assert isinstance(throttled, RateLimitedError) and throttled.retry_after == 25
    assert throttled.message == "Rate limit is exceeded. Try again in 25 seconds."
    assert isinstance(error_from_response(response(401, {"statusCode": 401, "message": "Denied"})), AuthenticationError)
    outage = error_from_response(response(503, {"title": "Service Unavailable", "status": 503, "detail": "down"}))
    assert isinstance(outage, TransientError) and outage.message == "down"


def test_money_on_the_wire_is_a_number_but_stays_decimal_in_the_model() -> None:
    line = FulfillmentLine(sku="A", quantity=1, unit_price=Money.of("0.10", "USD"))
    request = FulfillmentOrderRequest(
        reference="r",
        order_number="1",
        ship_to=Address(name="A", line1="l", city="c", country="US"),
        ship_method="Standard",
        lines=[line],
    )

    assert order_payload(request)["products"][0]["unit_price"] == 0.1
    assert line.unit_price is not None and line.unit_price.amount == Decimal("0.10")
