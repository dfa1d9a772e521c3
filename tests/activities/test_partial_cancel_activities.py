"""Partial cancellation against the sandbox over HTTP: the warehouse cuts what has not shipped, the ERP closes it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import split_only_sku, vendor_client
from temporalio.testing import ActivityEnvironment

from activities.sample import order, plentiful, shipment, state, stock
from activities.test_erp_activities import post, records
from orderflow.activities import ErpActivities, WarehouseActivities
from orderflow.canonical import FulfillmentStatus
from orderflow.canonical.saga import (
    AllocateInput,
    CancelUnshippedLinesInput,
    CloseUnshippedLinesInput,
    ConfirmShipmentInput,
    InvoiceOrderInput,
    ReleaseToWarehouseInput,
    idempotency_key,
    order_reference,
)
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


def wms_order(snapshot: dict[str, Any], reference: str) -> dict[str, Any]:
    (found,) = [o for o in snapshot["orders"] if o["reference_id"] == reference]
    return dict(found)


async def test_the_warehouse_cancels_the_unshipped_parcel_once_and_keeps_the_shipped_one(
    env: ActivityEnvironment, warehouse: WarehouseActivities, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    # No single centre holds the order, so it ships as two parcels; the first has left.
    sku, quantity = split_only_sku()
    sale = order("8101", [(sku, quantity)])
    reference = order_reference(sale.key)
    allocated = await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))
    released = await env.run(
        warehouse.release_to_warehouse,
        ReleaseToWarehouseInput(reference=reference, order=sale, allocation=allocated.allocation),
    )
    first, second = released.fulfillment_order.shipment_ids
    async with vendor_client(settings) as vendor:
        shipped = await vendor.post(
            "/simulate/shipment", json={"shipment_id": int(first), "simulation": {"action": "ShipOrder"}}
        )
        assert shipped.status_code == 200, shipped.text
    before = await state(sandbox, "wms")
    parcels = {str(s["id"]): s for s in wms_order(before, reference)["shipments"]}
    left = sum(line["quantity"] for line in parcels[first]["lines"])
    waiting = sum(line["quantity"] for line in parcels[second]["lines"])
    assert left + waiting == quantity and parcels[second]["status"] == "Processing"

    # The saga asks for everything not yet reported shipped; the warehouse cuts only what has not left.
    request = CancelUnshippedLinesInput(reference=reference, quantities={sku: quantity})
    result = await env.run(warehouse.cancel_unshipped_lines, request)
    again = await env.run(warehouse.cancel_unshipped_lines, request)

    assert result.cancelled == {sku: waiting}
    assert again == result
    assert result.fulfillment_order is not None
    assert [(ln.sku, ln.quantity) for ln in result.fulfillment_order.lines] == [(sku, left)]
    after = await state(sandbox, "wms")
    statuses = {str(s["id"]): s["status"] for s in wms_order(after, reference)["shipments"]}
    assert statuses == {first: "LabeledCreated", second: "Cancelled"}
    # The cancelled parcel's units are free to sell again.
    location = int(parcels[second]["location_id"])
    assert stock(after, sku, location)["committed"] == stock(before, sku, location)["committed"] - waiting


async def test_the_warehouse_cuts_some_units_of_a_parcel_and_no_order_means_nothing_will_ship(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful(2)
    sale = order("8102", [(first, 3), (second, 2)])
    reference = order_reference(sale.key)
    allocated = await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))
    await env.run(
        warehouse.release_to_warehouse,
        ReleaseToWarehouseInput(reference=reference, order=sale, allocation=allocated.allocation),
    )

    result = await env.run(
        warehouse.cancel_unshipped_lines, CancelUnshippedLinesInput(reference=reference, quantities={first: 1})
    )
    nothing = await env.run(
        warehouse.cancel_unshipped_lines, CancelUnshippedLinesInput(reference="OF-shopify-none", quantities={first: 1})
    )

    assert result.cancelled == {first: 1}
    assert result.fulfillment_order is not None
    assert result.fulfillment_order.status is not FulfillmentStatus.CANCELLED
    assert sorted((ln.sku, ln.quantity) for ln in result.fulfillment_order.lines) == sorted([(first, 2), (second, 2)])
    (parcel,) = wms_order(await state(sandbox, "wms"), reference)["shipments"]
    assert sorted((ln["sku"], ln["quantity"]) for ln in parcel["lines"]) == sorted([(first, 2), (second, 2)])
    assert (nothing.cancelled, nothing.fulfillment_order) == ({first: 1}, None)


async def test_the_erp_closes_the_unshipped_units_and_bills_only_what_shipped(
    env: ActivityEnvironment, erp: ErpActivities, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful(2)
    sale = order("8103", [(first, 2), (second, 3)])
    posted = await post(env, erp, sale)
    erp_order_id, external_id = posted.sales_order.erp_order_id, posted.sales_order.external_id
    parcel = shipment("810301", "9400000000000000008103", [(first, 2), (second, 1)])
    await env.run(
        erp.record_fulfillment,
        ConfirmShipmentInput(order=sale, shipment=parcel, erp_order_id=erp_order_id, erp_external_id=external_id),
    )

    request = CloseUnshippedLinesInput(external_id=external_id, quantities={second: 2})
    closed = await env.run(erp.close_unshipped_lines, request)
    again = await env.run(erp.close_unshipped_lines, request)
    nothing = await env.run(
        erp.close_unshipped_lines, CloseUnshippedLinesInput(external_id="OF-shopify-none", quantities={second: 1})
    )
    invoiced = await env.run(
        erp.invoice_order,
        InvoiceOrderInput(erp_order_id=erp_order_id, external_id=idempotency_key(sale.key, "invoice")),
    )

    assert nothing.sales_order is None
    assert closed.sales_order is not None and again.sales_order is not None
    # Closing the same units again cuts nothing more.
    assert [(ln.sku, ln.quantity) for ln in again.sales_order.lines] == [
        (ln.sku, ln.quantity) for ln in closed.sales_order.lines
    ]
    assert {ln.sku: ln.quantity for ln in closed.sales_order.lines} == {first: 2, second: 1}
    (sales_order,) = records(await state(sandbox, "netsuite"), "salesOrder", external_id)
    assert {ln["item"]["id"]: ln["quantity"] for ln in sales_order["item"]} == {
        CATALOG_BY_SKU[first].erp_item_id: 2,
        CATALOG_BY_SKU[second].erp_item_id: 1,
    }
    # The invoice bills the three units that shipped, nothing of the two cancelled.
    assert sorted((ln.sku, ln.quantity) for ln in invoiced.invoice.lines) == sorted([(first, 2), (second, 1)])
    expected = CATALOG_BY_SKU[first].price * 2 + CATALOG_BY_SKU[second].price
    assert invoiced.invoice.total.amount == expected
