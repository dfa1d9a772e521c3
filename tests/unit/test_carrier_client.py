"""The carrier client's read-before-write rules, seen from the wire with a recording transport."""

from __future__ import annotations

from decimal import Decimal

import httpx

from orderflow.adapters.carrier import CarrierClient
from orderflow.canonical import Address, Parcel
from orderflow.settings import CarrierSettings

RATE = {"id": "rate_1", "carrier": "USPS", "service": "Priority", "rate": "7.10", "currency": "USD"}
BOUGHT = {
    "id": "shp_1",
    "reference": "SO-1",
    "is_return": False,
    "rates": [RATE],
    "selected_rate": RATE,
    "tracking_code": "EZ4000000004",
    "postage_label": {"label_url": "http://127.0.0.1/label.pdf"},
    "tracker": {"id": "trk_1"},
    "refund_status": None,
}
ADDRESS = Address(name="WH", line1="1 Dock Rd", city="Cicero", region="IL", postal_code="60804", country="US")
BOX = Parcel(length_in=Decimal(1), width_in=Decimal(1), height_in=Decimal(1), weight_oz=Decimal(1))


class Recorder:
    """Answers requests from a table and remembers what was asked."""

    def __init__(self, answers: dict[tuple[str, str], list[httpx.Response]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        self.calls.append((request.method, request.url.path, dict(request.url.params)))
        return self.answers[key].pop(0)


def client(recorder: Recorder) -> CarrierClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    return CarrierClient(http, CarrierSettings(base_url="http://127.0.0.1:9/carrier"))


async def test_buy_on_a_shipment_that_already_has_a_label_sends_no_buy() -> None:
    recorder = Recorder({("GET", "/carrier/v2/shipments/shp_1"): [httpx.Response(200, json=BOUGHT)]})
    label = await client(recorder).buy_label("shp_1", "rate_other")
    assert label.tracking_number == "EZ4000000004"
    assert [(m, p) for m, p, _ in recorder.calls] == [("GET", "/carrier/v2/shipments/shp_1")]


async def test_a_422_on_buy_is_answered_by_reading_the_label_back() -> None:
    unbought = BOUGHT | {"selected_rate": None, "postage_label": None, "tracking_code": None}
    error = {"error": {"code": "SHIPMENT.POSTAGE.EXISTS", "message": "exists", "errors": []}}
    recorder = Recorder(
        {
            ("GET", "/carrier/v2/shipments/shp_1"): [
                httpx.Response(200, json=unbought),
                httpx.Response(200, json=BOUGHT),
            ],
            ("POST", "/carrier/v2/shipments/shp_1/buy"): [httpx.Response(422, json=error)],
        }
    )
    label = await client(recorder).buy_label("shp_1", "rate_1")
    assert label.carrier_shipment_id == "shp_1"
    assert [m for m, _, _ in recorder.calls] == ["GET", "POST", "GET"]


async def test_reference_lookup_pages_back_through_recent_shipments() -> None:
    other = BOUGHT | {"id": "shp_9", "reference": "SO-9"}
    recorder = Recorder(
        {
            ("GET", "/carrier/v2/shipments"): [
                httpx.Response(200, json={"shipments": [other], "has_more": True}),
                httpx.Response(200, json={"shipments": [BOUGHT], "has_more": False}),
            ],
        }
    )
    label = await client(recorder).purchase_label(reference="SO-1", ship_from=ADDRESS, ship_to=ADDRESS, parcel=BOX)
    assert label.carrier_shipment_id == "shp_1"
    first, second = (params for _, _, params in recorder.calls)
    assert "start_datetime" in first and "before_id" not in first
    assert second["before_id"] == "shp_9"
    assert len(recorder.calls) == 2  # found bought: no create, no buy


async def test_requests_authenticate_with_the_key_as_basic_username() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"id": "trk_1", "tracking_code": "EZ1000000001", "status": "pre_transit"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    await CarrierClient(http, CarrierSettings(base_url="http://127.0.0.1:9/carrier")).get_tracker("trk_1")
    # base64("EZTKsandbox0000000000:")
    assert seen == ["Basic RVpUS3NhbmRib3gwMDAwMDAwMDAwOg=="]
