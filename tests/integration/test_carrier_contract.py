"""The carrier adapter against the EasyPost-shaped simulator, over real HTTP.

Each test asserts on what the carrier holds afterwards (`/sandbox/state/carrier`): how many
shipments a reference has, whether it was bought once, its refund status, its tracker.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from orderflow.adapters.carrier import CarrierClient, error_from_response
from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
)
from orderflow.canonical import Address, Parcel, RefundStatus, TrackingStatus
from orderflow.sandbox.seed import WAREHOUSES
from orderflow.settings import SANDBOX_CARRIER_API_KEY, CarrierSettings, Settings

pytestmark = pytest.mark.integration

_WH = WAREHOUSES[0]
WAREHOUSE = Address(
    name=_WH.name, line1=_WH.street1, city=_WH.city, region=_WH.state, postal_code=_WH.zip, country=_WH.country
)
CUSTOMER = Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US")
BOX = Parcel(length_in=Decimal(10), width_in=Decimal(8), height_in=Decimal(4), weight_oz=Decimal("15.4"))
AUTH = (SANDBOX_CARRIER_API_KEY, "")


@pytest.fixture
def carrier(http: httpx.AsyncClient, settings: Settings) -> CarrierClient:
    return CarrierClient(http, settings.carrier)


async def state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    response = await sandbox.get("/sandbox/state/carrier")
    response.raise_for_status()
    return response.json()


async def shipments_for(sandbox: httpx.AsyncClient, reference: str) -> list[dict[str, Any]]:
    return [s for s in (await state(sandbox))["shipments"] if s["reference"] == reference]


async def fault(sandbox: httpx.AsyncClient, **rule: Any) -> None:
    response = await sandbox.post("/sandbox/faults", json={"system": "carrier", **rule})
    response.raise_for_status()


async def advance_and_tick(sandbox: httpx.AsyncClient, seconds: float) -> None:
    (await sandbox.post("/sandbox/clock/advance", json={"seconds": seconds})).raise_for_status()
    (await sandbox.post("/sandbox/tick")).raise_for_status()


# -- shipments and rates ----------------------------------------------------------------------


async def test_create_shipment_rates_the_parcel_and_stores_the_reference(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    quote = await carrier.create_shipment(reference="SO-1", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert 2 <= len(quote.rates) <= 4
    assert {r.carrier for r in quote.rates} >= {"USPS", "UPS", "FedEx"}
    assert all(r.amount.currency == "USD" and r.amount.amount > 0 for r in quote.rates)
    [stored] = await shipments_for(sandbox, "SO-1")
    assert stored["id"] == quote.carrier_shipment_id
    assert stored["purchased"] is False


async def test_rates_are_deterministic_and_heavier_parcels_cost_more(carrier: CarrierClient) -> None:
    light = await carrier.create_shipment(reference="SO-L1", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    again = await carrier.create_shipment(reference="SO-L2", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    heavy_box = BOX.model_copy(update={"weight_oz": Decimal(1600)})
    heavy = await carrier.create_shipment(reference="SO-H", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=heavy_box)
    assert [(r.service, r.amount) for r in light.rates] == [(r.service, r.amount) for r in again.rates]
    assert len(heavy.rates) == 2  # beyond USPS's weight limit only UPS and FedEx rate it
    ups_light = next(r for r in light.rates if r.carrier == "UPS")
    ups_heavy = next(r for r in heavy.rates if r.carrier == "UPS")
    assert ups_heavy.amount > ups_light.amount


async def test_creating_twice_for_one_reference_reuses_the_shipment(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    first = await carrier.create_shipment(reference="SO-2", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    second = await carrier.create_shipment(reference="SO-2", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert second.carrier_shipment_id == first.carrier_shipment_id
    assert len(await shipments_for(sandbox, "SO-2")) == 1


async def test_return_shipment_swaps_the_addresses(carrier: CarrierClient, sandbox: httpx.AsyncClient) -> None:
    quote = await carrier.create_shipment(
        reference="RMA-1", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX, is_return=True
    )
    assert quote.is_return
    [stored] = await shipments_for(sandbox, "RMA-1")
    assert (stored["from_zip"], stored["to_zip"]) == (CUSTOMER.postal_code, WAREHOUSE.postal_code)


async def test_missing_parcel_is_refused_with_parameter_required(settings: Settings, sandbox_url: str) -> None:
    # The canonical Parcel cannot be left out, so this goes to the wire directly and through the
    # adapter's error mapping.
    async with httpx.AsyncClient(auth=AUTH) as raw:
        response = await raw.post(
            f"{settings.carrier.base_url}/v2/shipments",
            json={"shipment": {"to_address": {"zip": "78701"}, "from_address": {"zip": "60804"}}},
        )
    assert response.status_code == 422
    assert response.json()["error"]["errors"] == [{"field": "shipment.parcel", "message": "cannot be blank"}]
    error = error_from_response(response)
    assert isinstance(error, ValidationRejectedError)
    assert not error.retryable
    assert error.vendor_code == "PARAMETER.REQUIRED"


async def test_address_without_zip_is_a_validation_rejection(carrier: CarrierClient) -> None:
    no_zip = CUSTOMER.model_copy(update={"postal_code": None})
    with pytest.raises(ValidationRejectedError) as caught:
        await carrier.create_shipment(reference="SO-3", ship_from=WAREHOUSE, ship_to=no_zip, parcel=BOX)
    assert caught.value.vendor_code == "ADDRESS.VERIFY.FAILURE"


async def test_rerate_replaces_the_rates_with_fresh_ids(carrier: CarrierClient, settings: Settings) -> None:
    quote = await carrier.create_shipment(reference="SO-4", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    async with httpx.AsyncClient(auth=AUTH) as raw:
        response = await raw.post(f"{settings.carrier.base_url}/v2/shipments/{quote.carrier_shipment_id}/rerate")
    assert response.status_code == 200
    fresh = response.json()["rates"]
    assert [r["rate"] for r in fresh] == [str(r.amount.amount) for r in quote.rates]
    assert not {r["id"] for r in fresh} & {r.rate_id for r in quote.rates}


# -- authentication and throttling --------------------------------------------------------------


async def test_a_wrong_api_key_is_an_authentication_error(http: httpx.AsyncClient, settings: Settings) -> None:
    bad = CarrierClient(http, CarrierSettings(base_url=settings.carrier.base_url, api_key=SecretStr("EZTKwrong")))
    with pytest.raises(AuthenticationError) as caught:
        await bad.create_shipment(reference="SO-5", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert caught.value.status_code == 401
    assert caught.value.vendor_code == "APIKEY.INACTIVE"


async def test_bearer_and_basic_auth_are_both_accepted_and_mode_follows_the_key(
    settings: Settings, sandbox_url: str
) -> None:
    async with httpx.AsyncClient() as raw:
        url = f"{settings.carrier.base_url}/v2/shipments"
        basic = await raw.get(url, auth=AUTH)
        bearer = await raw.get(url, headers={"Authorization": f"Bearer {SANDBOX_CARRIER_API_KEY}"})
        anonymous = await raw.get(url)
    assert (basic.status_code, bearer.status_code) == (200, 200)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "APIKEY.REQUIRED"
    sim_state = (await httpx.AsyncClient().get(f"{sandbox_url}/sandbox/state/carrier")).json()
    assert sim_state["mode"] == "test"


async def test_a_short_throttle_is_waited_out_inside_the_call(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    await fault(sandbox, method="POST", path="/v2/shipments", kind="throttle", times=2)
    quote = await carrier.create_shipment(reference="SO-6", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert len(await shipments_for(sandbox, "SO-6")) == 1
    assert quote.carrier_shipment_id
    [rule] = (await sandbox.get("/sandbox/faults")).json()
    assert rule["fired"] == 2


async def test_a_lasting_throttle_on_buy_goes_back_as_rate_limited(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    quote = await carrier.create_shipment(reference="SO-7", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    await fault(sandbox, method="POST", path="/v2/shipments/*/buy", kind="throttle")
    with pytest.raises(RateLimitedError) as caught:
        await carrier.buy_label(quote.carrier_shipment_id, quote.rates[0].rate_id)
    assert caught.value.vendor_code == "RATE_LIMITED"
    assert (await shipments_for(sandbox, "SO-7"))[0]["purchased"] is False


async def test_list_endpoints_allow_five_requests_a_second(settings: Settings, sandbox_url: str) -> None:
    async with httpx.AsyncClient(auth=AUTH) as raw:
        answers = [await raw.get(f"{settings.carrier.base_url}/v2/shipments") for _ in range(8)]
    statuses = [a.status_code for a in answers]
    assert statuses[:5] == [200] * 5
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled and throttled[0].json()["error"]["code"] == "RATE_LIMITED"


# -- labels ---------------------------------------------------------------------------------------


async def test_buying_twice_returns_the_same_label_and_buys_once(
    carrier: CarrierClient, sandbox: httpx.AsyncClient, settings: Settings
) -> None:
    quote = await carrier.create_shipment(reference="SO-8", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    first = await carrier.buy_label(quote.carrier_shipment_id, quote.rates[0].rate_id)
    second = await carrier.buy_label(quote.carrier_shipment_id, quote.rates[1].rate_id)
    assert second == first
    assert first.tracking_number.startswith("EZ")
    [stored] = await shipments_for(sandbox, "SO-8")
    assert stored["selected_rate"]["id"] == quote.rates[0].rate_id
    assert stored["tracking_code"] == first.tracking_number
    # The wire answer to a second buy is the modeled 422.
    async with httpx.AsyncClient(auth=AUTH) as raw:
        again = await raw.post(
            f"{settings.carrier.base_url}/v2/shipments/{quote.carrier_shipment_id}/buy",
            json={"rate": {"id": quote.rates[0].rate_id}},
        )
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "SHIPMENT.POSTAGE.EXISTS"


async def test_a_rate_of_another_shipment_cannot_be_bought(carrier: CarrierClient, sandbox: httpx.AsyncClient) -> None:
    one = await carrier.create_shipment(reference="SO-9", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    other = await carrier.create_shipment(reference="SO-10", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    with pytest.raises(ValidationRejectedError) as caught:
        await carrier.buy_label(one.carrier_shipment_id, other.rates[0].rate_id)
    assert caught.value.vendor_code == "SHIPMENT.RATE.INVALID"
    assert (await shipments_for(sandbox, "SO-9"))[0]["purchased"] is False


async def test_purchase_label_buys_the_cheapest_eligible_rate(
    carrier: CarrierClient, sandbox: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    cheapest = await carrier.purchase_label(reference="SO-11", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    ups_only = await carrier.purchase_label(
        reference="SO-12", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX, carriers=["UPS"]
    )
    overnight = await carrier.purchase_label(
        reference="SO-13", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX, max_delivery_days=2
    )
    quote = await carrier.create_shipment(reference="SO-11", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert cheapest.rate.amount == min(r.amount for r in quote.rates)
    assert ups_only.rate.carrier == "UPS"
    assert overnight.rate.delivery_days is not None and overnight.rate.delivery_days <= 2
    for reference, label in (("SO-11", cheapest), ("SO-12", ups_only), ("SO-13", overnight)):
        [stored] = await shipments_for(sandbox, reference)
        assert stored["selected_rate"]["id"] == label.rate.rate_id
    label_file = await http.get(cheapest.label_url)
    assert label_file.status_code == 200
    assert label_file.content.startswith(b"%PDF")
    with pytest.raises(ValidationRejectedError):
        await carrier.purchase_label(
            reference="SO-14", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX, carriers=["DHL"]
        )


async def test_get_label_and_find_label_read_the_bought_label(carrier: CarrierClient) -> None:
    bought = await carrier.purchase_label(reference="SO-15", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert await carrier.get_label(bought.carrier_shipment_id) == bought
    assert await carrier.find_label("SO-15") == bought
    assert await carrier.find_label("SO-unknown") is None


# -- refunds --------------------------------------------------------------------------------------


async def test_refund_is_submitted_then_refunded_and_repeating_it_is_harmless(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    label = await carrier.purchase_label(reference="SO-16", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    submitted = await carrier.refund_label(label.carrier_shipment_id)
    assert submitted.refund_status is RefundStatus.SUBMITTED
    assert (await carrier.refund_label(label.carrier_shipment_id)).refund_status is RefundStatus.SUBMITTED
    await advance_and_tick(sandbox, 60)
    assert (await carrier.get_label(label.carrier_shipment_id)).refund_status is RefundStatus.REFUNDED
    assert (await carrier.refund_label(label.carrier_shipment_id)).refund_status is RefundStatus.REFUNDED
    snapshot = await state(sandbox)
    assert [r["status"] for r in snapshot["refunds"]] == ["refunded"]
    assert "refund.successful" in [e["description"] for e in snapshot["events"]]


async def test_refund_of_a_scanned_label_is_rejected_and_then_a_conflict(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    label = await carrier.purchase_label(reference="SO-17", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    await advance_and_tick(sandbox, 150)  # unknown -> pre_transit -> in_transit: scanned
    await carrier.refund_label(label.carrier_shipment_id)
    await advance_and_tick(sandbox, 60)
    assert (await carrier.get_label(label.carrier_shipment_id)).refund_status is RefundStatus.REJECTED
    with pytest.raises(ConflictError):
        await carrier.refund_label(label.carrier_shipment_id)


# -- trackers -------------------------------------------------------------------------------------


async def test_tracker_progresses_to_delivered_on_the_sandbox_clock(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    tracker = await carrier.create_tracker("EZ4000000004", "USPS")
    assert tracker.status is TrackingStatus.PRE_TRANSIT
    await advance_and_tick(sandbox, 65)
    assert (await carrier.get_tracker(tracker.tracker_id)).status is TrackingStatus.IN_TRANSIT
    await advance_and_tick(sandbox, 600)
    delivered = await carrier.get_tracker(tracker.tracker_id)
    assert delivered.status is TrackingStatus.DELIVERED
    assert delivered.signed_by == "John Tester"
    updates = [e for e in (await state(sandbox))["events"] if e["description"] == "tracker.updated"]
    assert len(updates) == 3


async def test_test_codes_stop_at_their_fixed_status(carrier: CarrierClient, sandbox: httpx.AsyncClient) -> None:
    stuck = await carrier.create_tracker("EZ2000000002")
    returned = await carrier.create_tracker("EZ5000000005")
    await advance_and_tick(sandbox, 3600)
    assert (await carrier.get_tracker(stuck.tracker_id)).status is TrackingStatus.IN_TRANSIT
    assert (await carrier.get_tracker(returned.tracker_id)).status is TrackingStatus.RETURN_TO_SENDER


async def test_test_mode_refuses_a_real_tracking_code_and_repeats_reuse_the_tracker(carrier: CarrierClient) -> None:
    with pytest.raises(ValidationRejectedError) as caught:
        await carrier.create_tracker("9400100208303109505657")
    assert caught.value.vendor_code == "TRACKER.TRACKING_CODE.INVALID"
    first = await carrier.create_tracker("EZ1000000001", "USPS")
    assert (await carrier.create_tracker("EZ1000000001", "USPS")).tracker_id == first.tracker_id


# -- lost responses -------------------------------------------------------------------------------


async def test_a_create_whose_response_was_lost_is_reused_on_retry(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    await fault(sandbox, method="POST", path="/v2/shipments", kind="timeout_after_commit", hold_seconds=0.05, times=1)
    with pytest.raises(TransientError):
        await carrier.create_shipment(reference="SO-18", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    assert len(await shipments_for(sandbox, "SO-18")) == 1
    quote = await carrier.create_shipment(reference="SO-18", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    [stored] = await shipments_for(sandbox, "SO-18")
    assert stored["id"] == quote.carrier_shipment_id


async def test_a_buy_whose_response_was_lost_is_read_back_not_bought_again(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    quote = await carrier.create_shipment(reference="SO-19", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    await fault(
        sandbox, method="POST", path="/v2/shipments/*/buy", kind="timeout_after_commit", hold_seconds=0.05, times=1
    )
    with pytest.raises(TransientError):
        await carrier.buy_label(quote.carrier_shipment_id, quote.rates[0].rate_id)
    [bought] = await shipments_for(sandbox, "SO-19")
    assert bought["purchased"] is True
    label = await carrier.buy_label(quote.carrier_shipment_id, quote.rates[1].rate_id)
    [after] = await shipments_for(sandbox, "SO-19")
    assert after["tracking_code"] == bought["tracking_code"] == label.tracking_number
    assert after["selected_rate"]["id"] == quote.rates[0].rate_id
    assert len([t for t in (await state(sandbox))["trackers"] if t["shipment_id"] == quote.carrier_shipment_id]) == 1


async def test_purchase_retried_through_lost_responses_leaves_one_label_per_reference(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    await fault(sandbox, path="*", mutating_only=True, kind="timeout_after_commit", hold_seconds=0.02, rate=0.3)
    references = [f"SO-A{n}" for n in range(8)]
    labels = {}
    lost = 0
    for reference in references:
        for _attempt in range(30):  # what Temporal's retry policy would do
            try:
                labels[reference] = await carrier.purchase_label(
                    reference=reference, ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX
                )
                break
            except TransientError:
                lost += 1
        else:
            pytest.fail(f"{reference} never succeeded")
    assert lost > 0, "the fault never fired, so this test proved nothing"
    await sandbox.delete("/sandbox/faults")
    for reference in references:
        [stored] = await shipments_for(sandbox, reference)
        assert stored["purchased"] is True
        assert stored["tracking_code"] == labels[reference].tracking_number
        assert stored["id"] == labels[reference].carrier_shipment_id
    assert len({label.carrier_shipment_id for label in labels.values()}) == len(references)
    bought_trackers = [t for t in (await state(sandbox))["trackers"] if t["shipment_id"]]
    assert len(bought_trackers) == len(references)


async def test_a_bought_label_can_be_converted_to_zpl(
    carrier: CarrierClient, settings: Settings, http: httpx.AsyncClient
) -> None:
    label = await carrier.purchase_label(reference="SO-20", ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX)
    async with httpx.AsyncClient(auth=AUTH) as raw:
        response = await raw.get(
            f"{settings.carrier.base_url}/v2/shipments/{label.carrier_shipment_id}/label",
            params={"file_format": "ZPL"},
        )
    zpl_url = response.json()["postage_label"]["label_zpl_url"]
    zpl = await http.get(zpl_url)
    assert zpl.text.startswith("^XA") and label.tracking_number in zpl.text
