"""Lost answers on ShipBob writes: retried creates and cancels leave exactly one effect per reference."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, stock_cell

from orderflow.adapters.errors import TransientError
from orderflow.adapters.wms import WmsClient
from orderflow.canonical import CancellationOutcome, FulfillmentCancellation, FulfillmentOrder
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


async def state(sandbox: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await sandbox.get("/sandbox/state/wms")).json())


async def test_a_create_whose_answer_is_lost_returns_the_order_it_made(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "wms", "method": "POST", "path": "/2026-01/order", "kind": "timeout_after_commit"}
    await sandbox.post("/sandbox/faults", json={**rule, "times": 1, "hold_seconds": 0.1})
    wms = WmsClient(http, settings.wms)
    (sku,) = plentiful_skus(1)

    order = await wms.create_order(fulfillment_request("order:shopify:3001", [(sku, 2)]))

    snapshot = await state(sandbox)
    assert [o["id"] for o in snapshot["orders"]] == [int(order.wms_order_id)]
    assert stock_cell(snapshot, sku, 8)["committed"] == 2
    assert (await sandbox.get("/sandbox/faults")).json()[0]["fired"] == 1


async def test_a_create_timing_out_on_the_client_is_read_back_after_the_timeout(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "wms", "method": "POST", "path": "/2026-01/order", "kind": "timeout_after_commit"}
    await sandbox.post("/sandbox/faults", json={**rule, "times": 1, "hold_seconds": 1.0})
    wms = WmsClient(http, settings.wms.model_copy(update={"timeout_seconds": 0.3}))
    (sku,) = plentiful_skus(1)

    order = await wms.create_order(fulfillment_request("order:shopify:3002", [(sku, 1)]))

    assert [o["reference_id"] for o in (await state(sandbox))["orders"]] == [order.reference]


async def until_done(call: Any, *, attempts: int = 30) -> Any:
    """Repeat a step on transient failure, as Temporal's retry policy would."""
    for _ in range(attempts):
        try:
            return await call()
        except TransientError:
            continue
    raise AssertionError("the step never succeeded")


async def test_lost_answers_on_every_write_leave_one_order_per_reference_and_stock_committed_once(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "wms", "kind": "timeout_after_commit", "mutating_only": True, "rate": 0.3, "hold_seconds": 0.05}
    await sandbox.post("/sandbox/faults", json=rule)
    wms = WmsClient(http, settings.wms)
    skus = plentiful_skus(4)
    requests = [
        fulfillment_request(f"order:shopify:40{n:02d}", [(skus[n % 4], 1 + n % 3), (skus[(n + 1) % 4], 1)])
        for n in range(12)
    ]

    orders: list[FulfillmentOrder] = [await until_done(lambda r=r: wms.create_order(r)) for r in requests]
    cancelled: list[FulfillmentCancellation] = [
        await until_done(lambda o=o: wms.cancel_order(o.wms_order_id)) for o in orders[:4]
    ]

    snapshot = await state(sandbox)
    references = [o["reference_id"] for o in snapshot["orders"]]
    assert sorted(references) == sorted(r.reference for r in requests)
    assert {o.wms_order_id for o in orders} == {str(o["id"]) for o in snapshot["orders"]}
    assert all(c.outcome is CancellationOutcome.CANCELLED for c in cancelled)
    expected: dict[str, int] = {}
    for request in requests[4:]:
        for line in request.lines:
            expected[line.sku] = expected.get(line.sku, 0) + line.quantity
    for sku in skus:
        committed = stock_cell(snapshot, sku, 8)["committed"] + stock_cell(snapshot, sku, 11)["committed"]
        assert committed == expected.get(sku, 0), sku
    faults = (await sandbox.get("/sandbox/faults")).json()
    assert faults[0]["fired"] >= 3  # the test exercised lost answers, not a quiet run
