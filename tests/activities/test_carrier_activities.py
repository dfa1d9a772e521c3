"""Carrier activities against the EasyPost-shaped sandbox: buy a label from the warehouse, void it."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sample import SHIP_TO, failure_details, state
from orderflow.activities import CarrierActivities
from orderflow.canonical import Parcel, RefundStatus
from orderflow.canonical.saga import BuyLabelInput, VoidLabelInput
from orderflow.sandbox.seed import WAREHOUSES

pytestmark = pytest.mark.integration

PARCEL = Parcel(length_in=Decimal(12), width_in=Decimal(10), height_in=Decimal(6), weight_oz=Decimal(52))


def buy(reference: str, warehouse_id: str | None = "8") -> BuyLabelInput:
    """A label purchase for the test parcel, shipped from a warehouse."""
    return BuyLabelInput(reference=reference, ship_from_warehouse_id=warehouse_id, ship_to=SHIP_TO, parcel=PARCEL)


async def test_buy_label_ships_from_the_warehouse_address_and_buys_once(
    env: ActivityEnvironment, labels: CarrierActivities, sandbox: httpx.AsyncClient
) -> None:
    cicero = next(w for w in WAREHOUSES if w.wms_location_id == 8)

    first = await env.run(labels.buy_label, buy("OF-shopify-7001"))
    again = await env.run(labels.buy_label, buy("OF-shopify-7001"))

    assert again.label == first.label
    assert (first.ship_from.line1, first.ship_from.city, first.ship_from.postal_code) == (
        cicero.street1,
        cicero.city,
        cicero.zip,
    )
    (bought,) = (await state(sandbox, "carrier"))["shipments"]
    assert bought["reference"] == "OF-shopify-7001" and bought["purchased"]
    assert bought["from_zip"] == cicero.zip and bought["to_zip"] == SHIP_TO.postal_code
    assert bought["tracking_code"] == first.label.tracking_number


async def test_void_label_refunds_the_label_and_no_label_is_none(
    env: ActivityEnvironment, labels: CarrierActivities, sandbox: httpx.AsyncClient
) -> None:
    bought = await env.run(labels.buy_label, buy("OF-shopify-7002"))

    nothing = await env.run(labels.void_label, VoidLabelInput(reference="OF-shopify-none"))
    voided = await env.run(labels.void_label, VoidLabelInput(reference="OF-shopify-7002"))
    again = await env.run(labels.void_label, VoidLabelInput(reference="OF-shopify-7002"))

    assert nothing.refund_status is None
    assert voided.refund_status in (RefundStatus.SUBMITTED, RefundStatus.REFUNDED)
    assert again.refund_status in (RefundStatus.SUBMITTED, RefundStatus.REFUNDED)
    snapshot = await state(sandbox, "carrier")
    (shipment,) = snapshot["shipments"]
    assert shipment["refund_status"] in ("submitted", "refunded")
    assert [r["shipment_id"] for r in snapshot["refunds"]] == [bought.label.carrier_shipment_id]


async def test_an_unknown_warehouse_is_a_permanent_failure(
    env: ActivityEnvironment, labels: CarrierActivities, sandbox: httpx.AsyncClient
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await env.run(labels.buy_label, buy("OF-shopify-7003", warehouse_id="999"))

    assert caught.value.non_retryable and caught.value.type == "NotFoundError"
    assert failure_details(caught.value)["system"] == "wms"
    assert (await state(sandbox, "carrier"))["shipments"] == []
