"""The saga writing the real order view (SQLite and PostgreSQL) through `OrderViewActivities`, as a worker runs it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from fake_systems import FakeSystems, make_order, shipment_for
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from orderflow.activities.order_view import OrderViewActivities
from orderflow.canonical.saga import OperatorCommand, OrderStatus, OrderToCashInput, OrderView, ShipmentConfirmed
from orderflow.store.db import Database
from orderflow.store.order_view import OrderViews
from orderflow.workflows.order_to_cash import OrderToCash


def with_real_view(systems: FakeSystems, db: Database) -> list[Callable[..., Any]]:
    """The stand-in systems, with the real order view activity in place of the stand-in."""
    stand_ins = [fn for fn in systems.activities() if getattr(fn, "__name__", "") != "record_order_view"]
    return [*stand_ins, OrderViewActivities(db).record_order_view]


async def view_until(views: OrderViews, key: str, check: Callable[[OrderView], bool]) -> OrderView:
    for _ in range(200):
        view = await views.get(key)
        if view is not None and check(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"the order view never showed the expected state; last: {view}")


async def test_the_rows_follow_a_parked_order_to_completion(
    time_skipping: WorkflowEnvironment, database: Database
) -> None:
    systems = FakeSystems(failures={"post_sales_order": -1})
    views = OrderViews(database)
    order = make_order()
    queue = f"view-{uuid.uuid4()}"
    async with Worker(time_skipping.client, task_queue=queue, workflows=[OrderToCash],
                      activities=with_real_view(systems, database)):  # fmt: skip
        handle = await time_skipping.client.start_workflow(
            OrderToCash.run, OrderToCashInput(order=order), id=f"{order.key}-{uuid.uuid4()}", task_queue=queue
        )
        parked = await view_until(views, order.key, lambda v: v.needs_attention)
        systems.failures.clear()
        await handle.execute_update(OrderToCash.request_retry, OperatorCommand(requested_by="ops"))
        await view_until(views, order.key, lambda v: v.status is OrderStatus.RELEASED)
        await handle.signal(OrderToCash.on_shipment_confirmed, ShipmentConfirmed(shipment=shipment_for(order)))
        result = await handle.result()

    assert parked.status is OrderStatus.ALLOCATED and parked.attention_step == "post_to_erp"
    assert parked.attention_reason == "ValidationRejectedError: post_sales_order rejected by the test"
    done = await views.get(order.key)
    assert done is not None
    assert done.status is OrderStatus.COMPLETED and not done.needs_attention and done.attention_reason is None
    assert (done.erp_customer_id, done.erp_order_id, done.wms_order_id) == ("2001", "4321", "700")
    assert (done.carrier_shipment_id, done.erp_invoice_id) == ("shp_1", "INV-1")
    assert done.tracking_numbers == ["1ZLABEL", "1ZS1"]
    assert str(done.order_total.amount) == "30" and done.order_total.currency == "USD"
    assert set(done.step_times) >= {"accept", "allocate", "post_to_erp", "release", "invoice"}
    assert done.state == result.state and done.version > parked.version
    assert (await views.list(needs_attention=True)).orders == []
