"""EasyPost payloads (as quoted in api_facts §4) mapped to canonical models and typed errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orderflow.adapters.carrier import (
    address_to_easypost,
    cheapest_rate,
    error_from_response,
    label_from_shipment,
    parcel_to_easypost,
    quote_from_shipment,
    rate_from_easypost,
    tracker_from_event,
)
from orderflow.adapters.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
)
from orderflow.canonical import Address, Money, Parcel, RefundStatus, TrackingStatus

RATE = {
    "id": "rate_1",
    "object": "Rate",
    "carrier": "USPS",
    "service": "GroundAdvantage",
    "rate": "6.07",
    "currency": "USD",
    "retail_rate": "8.85",
    "list_rate": "6.57",
    "delivery_days": 3,
    "est_delivery_days": 3,
    "delivery_date_guaranteed": False,
    "shipment_id": "shp_1",
    "carrier_account_id": "ca_1",
}


def bought_shipment(**overrides: Any) -> dict[str, Any]:
    shipment: dict[str, Any] = {
        "id": "shp_1",
        "object": "Shipment",
        "reference": "SO-4321",
        "is_return": False,
        "rates": [RATE],
        "selected_rate": RATE,
        "tracking_code": "9400100208303109505657",
        "postage_label": {"label_url": "https://example.test/label.pdf", "label_size": "4x6"},
        "tracker": {"id": "trk_1", "status": "unknown", "public_url": "https://track.example/trk_1"},
        "refund_status": None,
    }
    return shipment | overrides


def test_rate_amount_string_becomes_exact_money() -> None:
    rate = rate_from_easypost(RATE)
    assert rate.amount == Money.of("6.07", "USD")
    assert (rate.rate_id, rate.carrier, rate.service, rate.delivery_days) == ("rate_1", "USPS", "GroundAdvantage", 3)


def test_bought_shipment_maps_to_a_label_with_tracking_and_label_file() -> None:
    label = label_from_shipment(bought_shipment())
    assert label.carrier_shipment_id == "shp_1"
    assert label.reference == "SO-4321"
    assert label.tracking_number == "9400100208303109505657"
    assert label.label_url == "https://example.test/label.pdf"
    assert label.tracker_id == "trk_1"
    assert label.rate.amount.amount == Decimal("6.07")
    assert label.refund_status is RefundStatus.NONE


def test_refund_status_of_the_shipment_is_carried_on_the_label() -> None:
    assert label_from_shipment(bought_shipment(refund_status="submitted")).refund_status is RefundStatus.SUBMITTED


def test_unbought_shipment_is_a_quote_not_a_label() -> None:
    unbought = bought_shipment(selected_rate=None, postage_label=None, tracking_code=None)
    assert [r.rate_id for r in quote_from_shipment(unbought).rates] == ["rate_1"]
    with pytest.raises(ValueError, match="no label"):
        label_from_shipment(unbought)


def test_tracker_updated_event_maps_to_the_tracker_it_carries() -> None:
    event = {
        "id": "evt_ebde5d3c",
        "object": "Event",
        "mode": "production",
        "description": "tracker.updated",
        "previous_attributes": {"status": "in_transit"},
        "result": {
            "id": "trk_9",
            "object": "Tracker",
            "status": "delivered",
            "tracking_code": "EZ4000000004",
            "carrier": "USPS",
            "shipment_id": "shp_9",
            "signed_by": "John Tester",
            "updated_at": "2025-03-06T19:48:05Z",
            "tracking_details": [],
        },
    }
    tracker = tracker_from_event(event)
    assert tracker.status is TrackingStatus.DELIVERED
    assert (tracker.tracker_id, tracker.tracking_number, tracker.carrier_shipment_id) == (
        "trk_9",
        "EZ4000000004",
        "shp_9",
    )
    assert tracker.updated_at == datetime(2025, 3, 6, 19, 48, 5, tzinfo=UTC)


def test_refund_event_is_not_mistaken_for_a_tracker() -> None:
    with pytest.raises(ValueError, match="does not carry a Tracker"):
        tracker_from_event({"id": "evt_2", "description": "refund.successful", "result": {"object": "Refund"}})


def envelope(status: int, code: str, errors: list[Any] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "errors": errors or []}}
    return httpx.Response(status, json=body, headers={"x-ep-request-uuid": "req-1"})


def test_missing_parameter_is_a_permanent_validation_error_with_field_errors() -> None:
    error = error_from_response(
        envelope(422, "PARAMETER.REQUIRED", [{"field": "shipment", "message": "cannot be blank"}])
    )
    assert isinstance(error, ValidationRejectedError)
    assert not error.retryable
    assert error.vendor_code == "PARAMETER.REQUIRED"
    assert error.details["errors"] == [{"field": "shipment", "message": "cannot be blank"}]
    assert error.details["request_id"] == "req-1"


@pytest.mark.parametrize("code", ["ADDRESS.VERIFY.FAILURE", "E.ADDRESS.NOT_FOUND"])
def test_address_rejections_are_validation_errors(code: str) -> None:
    error = error_from_response(envelope(422, code, ["House number is missing"]))
    assert isinstance(error, ValidationRejectedError)
    assert error.details["errors"] == ["House number is missing"]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "RATE_LIMITED", RateLimitedError),
        (401, "APIKEY.INACTIVE", AuthenticationError),
        (404, "PAYLOAD.NOT_FOUND", NotFoundError),
        (503, "SERVICE.UNAVAILABLE", TransientError),
    ],
)
def test_statuses_map_to_the_error_taxonomy(status: int, code: str, kind: type[Exception]) -> None:
    error = error_from_response(envelope(status, code))
    assert type(error) is kind
    assert error.vendor_code == code
    assert error.message == f"{code} happened"


def test_cheapest_rate_honours_carriers_and_delivery_days() -> None:
    rates = [
        RATE,
        RATE | {"id": "rate_ups", "carrier": "UPS", "service": "Ground", "rate": "9.10", "delivery_days": 2},
        RATE | {"id": "rate_fx", "carrier": "FedEx", "service": "FEDEX_2_DAY", "rate": "18.00", "delivery_days": 1},
    ]
    assert cheapest_rate(rates)["id"] == "rate_1"  # type: ignore[index]
    assert cheapest_rate(rates, carriers=["ups", "FedEx"])["id"] == "rate_ups"  # type: ignore[index]
    assert cheapest_rate(rates, max_delivery_days=1)["id"] == "rate_fx"  # type: ignore[index]
    assert cheapest_rate(rates, carriers=["DHL"]) is None


def test_canonical_address_and_parcel_use_easypost_fields_and_units() -> None:
    address = Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="us")
    assert address_to_easypost(address) == {
        "name": "Ada L",
        "street1": "1 Main St",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "country": "US",
    }
    parcel = Parcel(length_in=Decimal(10), width_in=Decimal(8), height_in=Decimal(4), weight_oz=Decimal("15.4"))
    assert parcel_to_easypost(parcel) == {"length": 10.0, "width": 8.0, "height": 4.0, "weight": 15.4}
