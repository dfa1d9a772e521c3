"""Return labels at the carrier: bought once per reference, swapped addresses, voidable while unused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from orderflow.adapters.carrier import CarrierClient
from orderflow.adapters.errors import TransientError
from orderflow.canonical import Address, Parcel, RefundStatus
from orderflow.sandbox.seed import WAREHOUSES
from orderflow.settings import Settings

pytestmark = pytest.mark.integration

_WH = WAREHOUSES[0]
WAREHOUSE = Address(
    name=_WH.name, line1=_WH.street1, city=_WH.city, region=_WH.state, postal_code=_WH.zip, country=_WH.country
)
CUSTOMER = Address(name="Ada L", line1="1 Main St", city="Austin", region="TX", postal_code="78701", country="US")
BOX = Parcel(length_in=Decimal(10), width_in=Decimal(8), height_in=Decimal(4), weight_oz=Decimal("15.4"))
THIRTY_DAYS = 30 * 24 * 3600


@pytest.fixture
def carrier(http: httpx.AsyncClient, settings: Settings) -> CarrierClient:
    return CarrierClient(http, settings.carrier)


async def shipments_for(sandbox: httpx.AsyncClient, reference: str) -> list[dict[str, Any]]:
    state = (await sandbox.get("/sandbox/state/carrier")).json()
    return [s for s in state["shipments"] if s["reference"] == reference]


async def test_a_return_label_is_bought_once_and_voided_when_the_return_expires_unused(
    carrier: CarrierClient, sandbox: httpx.AsyncClient
) -> None:
    reference = "return:shopify:3547000001"
    # The answer to the buy is lost; the retry finds the label on the shipment instead of buying twice.
    await sandbox.post("/sandbox/faults", json={"system": "carrier", "kind": "timeout_after_commit",
                                                "path": "*/buy", "hold_seconds": 0, "times": 1})  # fmt: skip
    with pytest.raises(TransientError):
        await carrier.purchase_label(reference=reference, ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX,
                                     is_return=True)  # fmt: skip
    label = await carrier.purchase_label(reference=reference, ship_from=WAREHOUSE, ship_to=CUSTOMER, parcel=BOX,
                                         is_return=True)  # fmt: skip
    assert label.is_return and label.tracking_number and label.label_url
    assert await carrier.find_label(reference, is_return=True) == label
    assert await carrier.find_label(reference) is None  # an outbound label under the same reference is another
    (stored,) = await shipments_for(sandbox, reference)
    assert stored["purchased"] and stored["is_return"]
    assert (stored["from_zip"], stored["to_zip"]) == (CUSTOMER.postal_code, WAREHOUSE.postal_code)

    # Thirty days on, the customer never shipped: the label is still unscanned and can be voided.
    await sandbox.post("/sandbox/clock/advance", json={"seconds": THIRTY_DAYS})
    await sandbox.post("/sandbox/tick")
    trackers = (await sandbox.get("/sandbox/state/carrier")).json()["trackers"]
    assert next(t for t in trackers if t["id"] == stored["tracker_id"])["status"] == "unknown"
    assert (await carrier.refund_label(label.carrier_shipment_id)).refund_status is RefundStatus.SUBMITTED
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 120})
    await sandbox.post("/sandbox/tick")
    voided = await carrier.refund_label(label.carrier_shipment_id)
    assert voided.refund_status is RefundStatus.REFUNDED
    state = (await sandbox.get("/sandbox/state/carrier")).json()
    assert [(r["shipment_id"], r["status"]) for r in state["refunds"]] == [(label.carrier_shipment_id, "refunded")]
