"""Warehouse activities against the ShipBob-shaped sandbox: reserve, release, release to the floor, cancel."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from contracts.wms_sandbox import scarce_sku, split_only_sku, vendor_client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.sample import (
    failure_details,
    label,
    more_in_cicero,
    only_in_moreno_valley,
    order,
    plentiful,
    state,
    stock,
)
from orderflow.activities import WarehouseActivities
from orderflow.canonical import AllocationStatus, CancellationOutcome, FulfillmentStatus
from orderflow.canonical.saga import (
    AllocateInput,
    CancelFulfillmentOrderInput,
    ReleaseAllocationInput,
    ReleaseToWarehouseInput,
    order_reference,
)
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


async def test_allocate_reserves_every_line_in_one_warehouse_and_commits_the_stock(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful(2)
    sale = order("5001", [(first, 3), (second, 2)])
    before = await state(sandbox, "wms")

    result = await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert result.allocation.status is AllocationStatus.ALLOCATED
    assert result.allocation.order_key == sale.key
    assert {(ln.sku, ln.warehouse_id, ln.quantity_allocated) for ln in result.allocation.lines} == {
        (first, "8", 3),
        (second, "8", 2),
    }
    after = await state(sandbox, "wms")
    (reservation,) = after["reservations"]
    assert reservation["reference_id"] == "OF-shopify-5001" and reservation["status"] == "Active"
    for sku, qty in ((first, 3), (second, 2)):
        assert stock(after, sku, 8)["committed"] == stock(before, sku, 8)["committed"] + qty
        assert stock(after, sku, 8)["fulfillable"] == stock(before, sku, 8)["fulfillable"] - qty
    assert after["orders"] == []


async def test_allocating_twice_holds_the_stock_once(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("5002", [(sku, 4)])
    request = AllocateInput(reference=order_reference(sale.key), order=sale)

    first = await env.run(warehouse.allocate, request)
    again = await env.run(warehouse.allocate, request)

    assert again.allocation == first.allocation
    after = await state(sandbox, "wms")
    assert len(after["reservations"]) == 1
    assert stock(after, sku, 8)["committed"] == 4


async def test_lines_no_single_warehouse_holds_are_split_across_warehouses(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    western = only_in_moreno_valley()
    eastern, qty = more_in_cicero()
    sale = order("5003", [(western, 2), (eastern, qty)])

    result = await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert result.allocation.status is AllocationStatus.ALLOCATED
    assert {(ln.sku, ln.warehouse_id, ln.quantity_allocated) for ln in result.allocation.lines} == {
        (western, "11", 2),
        (eastern, "8", qty),
    }
    (reservation,) = (await state(sandbox, "wms"))["reservations"]
    assert {(i["sku"], i["location_id"], i["quantity"]) for i in reservation["items"]} == {
        (western, 11, 2),
        (eastern, 8, qty),
    }


async def test_a_line_no_single_warehouse_can_fill_is_split_between_them(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    sku, qty = split_only_sku()
    sale = order("5011", [(sku, qty)])

    result = await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert result.allocation.status is AllocationStatus.ALLOCATED
    assert sum(ln.quantity_allocated for ln in result.allocation.lines) == qty
    assert {ln.warehouse_id for ln in result.allocation.lines} == {"8", "11"}
    after = await state(sandbox, "wms")
    assert stock(after, sku, 8)["committed"] + stock(after, sku, 11)["committed"] == qty


async def test_an_order_the_network_cannot_fill_is_backordered_with_nothing_reserved(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    scarce = scarce_sku()
    sale = order("5004", [(sku, 1), (scarce, 50)])
    before = await state(sandbox, "wms")

    result = await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert result.allocation.status is AllocationStatus.BACKORDERED
    assert {ln.sku: ln.shortfall for ln in result.allocation.lines}[scarce] == 50
    assert all(ln.quantity_allocated == 0 for ln in result.allocation.lines)
    after = await state(sandbox, "wms")
    assert after["reservations"] == []
    assert after["stock"] == before["stock"]


async def test_release_allocation_gives_the_stock_back_and_is_safe_to_repeat(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("5005", [(sku, 5)])
    reference = order_reference(sale.key)
    before = await state(sandbox, "wms")
    await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))

    first = await env.run(warehouse.release_allocation, ReleaseAllocationInput(reference=reference))
    again = await env.run(warehouse.release_allocation, ReleaseAllocationInput(reference=reference))
    nothing = await env.run(warehouse.release_allocation, ReleaseAllocationInput(reference="OF-shopify-none"))

    assert (first.released, again.released, nothing.released) == (True, True, False)
    after = await state(sandbox, "wms")
    assert [r["status"] for r in after["reservations"]] == ["Released"]
    assert stock(after, sku, 8) == stock(before, sku, 8)


async def test_release_to_warehouse_consumes_the_reservation_and_ships_under_our_label(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient, settings: Settings
) -> None:
    first, second = plentiful(2)
    sale = order("5006", [(first, 2), (second, 1)])
    reference = order_reference(sale.key)
    allocated = await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))
    reserved = await state(sandbox, "wms")
    request = ReleaseToWarehouseInput(reference=reference, order=sale, allocation=allocated.allocation, label=label())

    released = await env.run(warehouse.release_to_warehouse, request)
    again = await env.run(warehouse.release_to_warehouse, request)

    assert again.fulfillment_order.wms_order_id == released.fulfillment_order.wms_order_id
    assert released.fulfillment_order.status is FulfillmentStatus.PROCESSING
    assert released.fulfillment_order.reference == reference
    after = await state(sandbox, "wms")
    (wms_order,) = after["orders"]
    (reservation,) = after["reservations"]
    assert reservation["status"] == "Consumed" and reservation["order_id"] == wms_order["id"]
    # The order's stock is the reserved stock: nothing committed a second time.
    assert stock(after, first, 8)["committed"] == stock(reserved, first, 8)["committed"] == 2
    async with vendor_client(settings) as vendor:
        shipped = await vendor.post(
            "/simulate/shipment", json={"order_id": wms_order["id"], "simulation": {"action": "ShipOrder"}}
        )
        assert shipped.status_code == 200, shipped.text
    (parcel,) = (await state(sandbox, "wms"))["orders"][0]["shipments"]
    assert parcel["tracking"]["tracking_number"] == "9400111899223344556677"
    assert parcel["tracking"]["carrier"] == "USPS"


async def test_cancelling_a_fulfillment_order_gives_its_stock_back_and_nothing_to_cancel_is_none(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("5007", [(sku, 3)])
    reference = order_reference(sale.key)
    before = await state(sandbox, "wms")
    allocated = await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))
    await env.run(
        warehouse.release_to_warehouse,
        ReleaseToWarehouseInput(reference=reference, order=sale, allocation=allocated.allocation),
    )

    nothing = await env.run(warehouse.cancel_fulfillment_order, CancelFulfillmentOrderInput(reference="OF-shopify-x"))
    cancelled = await env.run(warehouse.cancel_fulfillment_order, CancelFulfillmentOrderInput(reference=reference))
    again = await env.run(warehouse.cancel_fulfillment_order, CancelFulfillmentOrderInput(reference=reference))
    released = await env.run(warehouse.release_allocation, ReleaseAllocationInput(reference=reference))

    assert nothing.outcome is None
    assert cancelled.outcome is again.outcome is CancellationOutcome.CANCELLED
    # The order owned the reserved stock; releasing the consumed reservation gives nothing back twice.
    assert released.released is False
    after = await state(sandbox, "wms")
    assert after["orders"][0]["status"] == "Cancelled"
    assert stock(after, sku, 8) == stock(before, sku, 8)


async def test_a_labelled_order_cannot_be_cancelled_and_the_refusal_is_data(
    env: ActivityEnvironment, warehouse: WarehouseActivities, settings: Settings
) -> None:
    (sku,) = plentiful(1)
    sale = order("5008", [(sku, 1)])
    reference = order_reference(sale.key)
    allocated = await env.run(warehouse.allocate, AllocateInput(reference=reference, order=sale))
    released = await env.run(
        warehouse.release_to_warehouse,
        ReleaseToWarehouseInput(reference=reference, order=sale, allocation=allocated.allocation),
    )
    async with vendor_client(settings) as vendor:
        body = {"order_id": released.fulfillment_order.wms_order_id, "simulation": {"action": "ShipOrder"}}
        assert (await vendor.post("/simulate/shipment", json=body)).status_code == 200

    refused = await env.run(warehouse.cancel_fulfillment_order, CancelFulfillmentOrderInput(reference=reference))

    assert refused.outcome is CancellationOutcome.REFUSED
    assert refused.reason is not None and "label exists" in refused.reason


async def test_a_long_throttle_goes_back_to_temporal_with_the_vendors_wait(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("5009", [(sku, 1)])
    rule = {"system": "wms", "kind": "throttle", "retry_after": 30, "times": 1}
    assert (await sandbox.post("/sandbox/faults", json=rule)).status_code == 201

    with pytest.raises(ApplicationError) as caught:
        await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert caught.value.type == "RateLimitedError"
    assert not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=30)
    assert failure_details(caught.value)["status_code"] == 429
    assert (await state(sandbox, "wms"))["reservations"] == []


async def test_a_refused_request_is_permanent_and_keeps_shipbobs_code(
    env: ActivityEnvironment, warehouse: WarehouseActivities, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful(1)
    sale = order("5010", [(sku, 1)])
    rule = {"system": "wms", "kind": "error", "status": 400, "path": "*inventory-reservation*", "times": 1}
    assert (await sandbox.post("/sandbox/faults", json=rule)).status_code == 201

    with pytest.raises(ApplicationError) as caught:
        await env.run(warehouse.allocate, AllocateInput(reference=order_reference(sale.key), order=sale))

    assert caught.value.type == "ValidationRejectedError"
    assert caught.value.non_retryable
    assert failure_details(caught.value) == {"system": "wms", "vendor_code": "Bad Request", "status_code": 400}
