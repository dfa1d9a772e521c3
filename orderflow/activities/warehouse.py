"""Warehouse steps of order to cash: reserve stock, give it back, release the order, cancel it (WMS).

Allocation policy: one warehouse that holds every line, if there is one (the lowest id wins a tie,
so the choice is stable across retries); otherwise each line from the warehouse with the most free
stock, split over several when no single one has enough. If the network as a whole is short of
any line, the order is BACKORDERED and nothing is reserved.
"""

from __future__ import annotations

from temporalio import activity

from orderflow.activities.failures import translated_failures
from orderflow.adapters.wms import WmsClient, backordered
from orderflow.canonical import (
    Allocation,
    AllocationLine,
    AllocationStatus,
    FulfillmentLine,
    FulfillmentOrderRequest,
    Order,
    StockLevel,
)
from orderflow.canonical.saga import (
    AllocateInput,
    AllocateResult,
    CancelFulfillmentOrderInput,
    CancelFulfillmentOrderResult,
    CancelUnshippedLinesInput,
    CancelUnshippedLinesResult,
    ReleaseAllocationInput,
    ReleaseAllocationResult,
    ReleaseToWarehouseInput,
    ReleaseToWarehouseResult,
)

# ShipBob maps an unknown shipping method to Standard; say so explicitly when the channel gave none.
DEFAULT_SHIP_METHOD = "Standard"


def demand_of(order: Order) -> dict[str, int]:
    """Units per SKU the warehouse must ship (lines that need no shipping are not stocked)."""
    demand: dict[str, int] = {}
    for line in order.lines:
        if line.requires_shipping:
            demand[line.sku] = demand.get(line.sku, 0) + line.quantity
    return demand


def plan_allocation(demand: dict[str, int], stock: list[StockLevel]) -> tuple[list[AllocationLine], bool]:
    """Where each SKU's units come from, and whether the network has enough of everything."""
    free: dict[str, dict[str, int]] = {}
    for level in stock:
        free.setdefault(level.warehouse_id, {})[level.sku] = level.fulfillable
    warehouses = sorted(free, key=lambda w: (int(w) if w.isdigit() else 0, w))
    for warehouse in warehouses:
        if all(free[warehouse].get(sku, 0) >= qty for sku, qty in demand.items()):
            return [AllocationLine(sku=sku, warehouse_id=warehouse, quantity_requested=qty,
                                   quantity_allocated=qty) for sku, qty in demand.items()], True  # fmt: skip
    lines: list[AllocationLine] = []
    enough = True
    for sku, qty in demand.items():
        by_free = sorted(warehouses, key=lambda w: -free[w].get(sku, 0))
        single = next((w for w in by_free if free[w].get(sku, 0) >= qty), None)
        if single is not None:
            lines.append(AllocationLine(sku=sku, warehouse_id=single, quantity_requested=qty, quantity_allocated=qty))
            continue
        left = qty
        for warehouse in by_free:
            take = min(left, free[warehouse].get(sku, 0))
            if take > 0:
                lines.append(
                    AllocationLine(sku=sku, warehouse_id=warehouse, quantity_requested=take, quantity_allocated=take)
                )
                left -= take
        if left:
            enough = False
            # Report the whole line as short, against the warehouse that holds the most of it.
            lines = [line for line in lines if line.sku != sku]
            where = by_free[0] if by_free else ""
            lines.append(AllocationLine(sku=sku, warehouse_id=where, quantity_requested=qty, quantity_allocated=0))
    return lines, enough


def fulfillment_request(reference: str, order: Order) -> FulfillmentOrderRequest:
    """The fulfillment order for an order's shippable lines, under the saga's reference."""
    ship_method = order.ship_method or next((c.title for c in order.shipping), None) or DEFAULT_SHIP_METHOD
    return FulfillmentOrderRequest(
        reference=reference,
        order_number=order.order_number,
        ship_to=order.ship_to,
        ship_method=ship_method,
        lines=[
            FulfillmentLine(sku=line.sku, quantity=line.quantity, name=line.name, unit_price=line.unit_price)
            for line in order.lines
            if line.requires_shipping
        ],
        channel=order.channel.value,
        placed_at=order.placed_at,
    )


class WarehouseActivities:
    """The saga's steps in the warehouse, each safe to repeat."""

    def __init__(self, wms: WmsClient) -> None:
        self.wms = wms

    @activity.defn
    async def allocate(self, input: AllocateInput) -> AllocateResult:
        """Reserve the order's stock, or report it backordered with nothing reserved."""
        order_key = input.order.key
        with translated_failures():
            # A reservation an earlier attempt made is the answer; re-planning against stock that
            # already excludes it could call a reserved order backordered.
            existing = await self.wms.find_reservation(input.reference)
            if existing is not None:
                return AllocateResult(allocation=existing.model_copy(update={"order_key": order_key}))
            demand = demand_of(input.order)
            if not demand:
                # Nothing to ship (gift cards, services): nothing to hold.
                nothing = Allocation(order_key=order_key, lines=[], status=AllocationStatus.ALLOCATED)
                return AllocateResult(allocation=nothing)
            stock = await self.wms.get_stock(sorted(demand))
            lines, enough = plan_allocation(demand, stock)
            if not enough:
                allocation = backordered(input.reference, lines)
            else:
                allocation = await self.wms.reserve_stock(input.reference, lines)
        return AllocateResult(allocation=allocation.model_copy(update={"order_key": order_key}))

    @activity.defn
    async def release_allocation(self, input: ReleaseAllocationInput) -> ReleaseAllocationResult:
        """Give back the stock reserved under a reference; nothing reserved is success too."""
        with translated_failures():
            released = await self.wms.release_reservation(input.reference)
        return ReleaseAllocationResult(released=released)

    @activity.defn
    async def release_to_warehouse(self, input: ReleaseToWarehouseInput) -> ReleaseToWarehouseResult:
        """Create the fulfillment order, which takes over the reservation and ships under our label."""
        with translated_failures():
            order = await self.wms.create_order(fulfillment_request(input.reference, input.order), label=input.label)
        return ReleaseToWarehouseResult(fulfillment_order=order)

    @activity.defn
    async def cancel_fulfillment_order(self, input: CancelFulfillmentOrderInput) -> CancelFulfillmentOrderResult:
        """Cancel the fulfillment order created under a reference; refused once labelled, which is data."""
        with translated_failures():
            order = await self.wms.find_order_by_reference(input.reference)
            if order is None:
                return CancelFulfillmentOrderResult(outcome=None)
            cancellation = await self.wms.cancel_order(order.wms_order_id)
        return CancelFulfillmentOrderResult(outcome=cancellation.outcome, reason=cancellation.reason)

    @activity.defn
    async def cancel_unshipped_lines(self, input: CancelUnshippedLinesInput) -> CancelUnshippedLinesResult:
        """Cancel units of a partly shipped order the warehouse has not shipped, and say which it really cancelled.

        The quantities are a target (units of each SKU cancelled on the order in all), so a retry
        after a lost answer cuts nothing more. Units already picked, packed or labelled stay on
        their way: what was cancelled is what was ordered less what still ships or has shipped.
        """
        with translated_failures():
            order = await self.wms.find_order_by_reference(input.reference)
            if order is None:
                # Nothing was released, so none of these units will ship.
                return CancelUnshippedLinesResult(cancelled=dict(input.quantities))
            after = await self.wms.cancel_order_lines(order.wms_order_id, input.quantities)
        ordered, going = _units(order.lines), _units(after.lines)
        cancelled = {sku: min(qty, ordered.get(sku, 0) - going.get(sku, 0)) for sku, qty in input.quantities.items()}
        return CancelUnshippedLinesResult(
            cancelled={sku: qty for sku, qty in cancelled.items() if qty > 0}, fulfillment_order=after
        )


def _units(lines: list[FulfillmentLine]) -> dict[str, int]:
    units: dict[str, int] = {}
    for line in lines:
        units[line.sku] = units.get(line.sku, 0) + line.quantity
    return units
