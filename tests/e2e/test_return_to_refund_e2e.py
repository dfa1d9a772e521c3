"""Return to refund end to end: a Shopify customer's return to one refund, on the real dev server and worker.

The saga runs on the Temporal dev server in the real worker (`build_worker`: real activities, real
adapters) against the sandbox. The order it returns is set up as the order saga leaves one: taxed
and fulfilled on Shopify, posted and fulfilled in the ERP under the order's reference, shipped by
the warehouse. The warehouse's receipt is its own `return.completed` webhook body. Assertions read
the sandbox's state: one refund on Shopify equal to the ERP's credit memo to the cent, damaged units
in the write-off location, only sellable units back in stock. The same run is repeated with every
create's answer lost once (timeout after commit).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from activities.returns_sample import (
    WRITE_OFF,
    customer_requests_return,
    delivered_order,
    held,
    received_in_warehouse,
    shipped_in_warehouse,
    sold_and_shipped,
)
from contracts.returns_sandbox import add_fault, records_with_external_id
from contracts.wms_sandbox import stock_cell
from temporalio.testing import WorkflowEnvironment

from orderflow.adapters.netsuite import NetSuiteClient
from orderflow.adapters.shopify import ShopifyClient
from orderflow.adapters.wms import WmsClient
from orderflow.canonical.return_saga import (
    ReturnReceived,
    ReturnSagaState,
    ReturnStatus,
    ReturnToRefundResult,
    return_reference,
    return_step_key,
    return_to_refund_input,
)
from orderflow.settings import Settings
from orderflow.temporal import initial_return_search_attributes
from orderflow.worker import build_worker
from orderflow.workflows.return_to_refund import ReturnToRefund

pytestmark = pytest.mark.integration

BOLT, NUT = "BOLT-M8-S", "NUT-M8-M"


@pytest.fixture
async def queue(dev_server: WorkflowEnvironment, settings: Settings, http: httpx.AsyncClient) -> AsyncIterator[str]:
    """A worker with every real activity on a task queue of this test's own."""
    name = f"r2r-e2e-{uuid.uuid4()}"
    async with build_worker(dev_server.client, settings, http, task_queue=name):
        yield name


async def snapshot(sandbox: httpx.AsyncClient, system: str) -> dict[str, Any]:
    response = await sandbox.get(f"/sandbox/state/{system}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("answers_lost", [False, True], ids=["clean", "every-create-answer-lost-once"])
async def test_a_shopify_return_ends_in_one_refund_equal_to_the_erp_credit_memo(
    dev_server: WorkflowEnvironment,
    queue: str,
    settings: Settings,
    http: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    answers_lost: bool,
) -> None:
    shopify, netsuite, wms = ShopifyClient(http, settings.shopify), NetSuiteClient(http, settings.netsuite), \
        WmsClient(http, settings.wms)  # fmt: skip
    number = "8602" if answers_lost else "8601"
    sale = await delivered_order(shopify, [(BOLT, 3), (NUT, 2)], f"1Z{number}")
    await sold_and_shipped(netsuite, number, {BOLT: 3, NUT: 2}, order=sale, erp_customer_id="2001")
    await shipped_in_warehouse(wms, settings, sale.key, [(BOLT, 3), (NUT, 2)])
    return_id = await customer_requests_return(sandbox, sale, {BOLT: 2, NUT: 1})
    request = await shopify.get_return(return_id)
    if answers_lost:
        for system, rule in (
            ("netsuite", {"path": "*!transform/returnAuthorization"}),
            ("netsuite", {"path": "*!transform/itemReceipt"}),
            ("netsuite", {"path": "*!transform/creditMemo"}),
            ("wms", {"method": "POST", "path": "/*/return"}),
            ("shopify", {"operation": "refundCreate"}),
        ):
            await add_fault(sandbox, system, kind="timeout_after_commit", times=1, **rule)

    handle = await dev_server.client.start_workflow(
        ReturnToRefund.run,
        return_to_refund_input(request, settings=settings.returns),
        id=request.key,
        task_queue=queue,
        search_attributes=initial_return_search_attributes(request),
        result_type=ReturnToRefundResult,
    )
    state: ReturnSagaState = await handle.query(ReturnToRefund.state)
    for _ in range(400):
        state = await handle.query(ReturnToRefund.state)
        if state.status is ReturnStatus.AWAITING_RECEIPT or state.needs_attention:
            break
        await asyncio.sleep(0.05)
    assert state.status is ReturnStatus.AWAITING_RECEIPT, state.model_dump_json()
    assert state.ids.wms_return_id is not None
    before = await snapshot(sandbox, "wms")
    box = await received_in_warehouse(
        settings, sandbox, state.ids.wms_return_id, [(BOLT, "Restock", 1), (BOLT, "Dispose", 1), (NUT, "Restock", 1)]
    )
    await handle.signal(ReturnToRefund.on_return_received, ReturnReceived(receipt=box))
    result = await asyncio.wait_for(handle.result(), 60)

    assert result.status is ReturnStatus.COMPLETED, result.state.model_dump_json()
    assert result.state.lines_received == {BOLT: 2, NUT: 1} and result.state.lines_damaged == {BOLT: 1}
    # Exactly one refund on Shopify, and the ERP credited exactly what it paid out.
    refunds = held(await snapshot(sandbox, "shopify"), sale)["refunds"]
    paid = [Decimal(str(t["amount"])) for r in refunds for t in r["transactions"]]
    erp = await snapshot(sandbox, "netsuite")
    (memo,) = records_with_external_id(erp, "creditMemo", return_step_key(request.key, "credit"))
    assert len(paid) == 1 and paid == [Decimal(str(memo["total"]))]
    assert result.state.refund_total == result.state.erp_credit_total
    assert result.state.refund_total is not None and result.state.refund_total.amount == paid[0]
    # Two bolts and a nut at list price, with the 6.25% tax the channel charged on them.
    merchandise = sum((line.net.amount / line.quantity * {BOLT: 2, NUT: 1}[line.sku] for line in sale.lines),
                      Decimal(0))  # fmt: skip
    assert merchandise < paid[0] < merchandise * Decimal("1.07")
    # One authorization, the damaged bolt received into the write-off location.
    (ra,) = records_with_external_id(erp, "returnAuthorization", return_step_key(request.key, "ra"))
    receipts = [r for r in erp["records"]["itemReceipt"] if r["createdFrom"]["id"] == ra["id"]]
    assert sorted(r["externalId"].rsplit("-", 1)[1] for r in receipts) == ["d", "s"]
    (damaged,) = [r for r in receipts if r["externalId"].endswith("-d")]
    assert [(line["location"]["id"], line["quantity"]) for line in damaged["item"]] == [(WRITE_OFF, 1)]
    # Only the sellable units are back on the shelf.
    after = await snapshot(sandbox, "wms")
    assert stock_cell(after, BOLT, 8)["on_hand"] == stock_cell(before, BOLT, 8)["on_hand"] + 1
    assert stock_cell(after, NUT, 8)["on_hand"] == stock_cell(before, NUT, 8)["on_hand"] + 1
    # The customer got the label on Shopify, and the return is closed there.
    assert await shopify.return_status(return_id) == "closed"
    ((delivery,),) = [r["reverse_deliveries"] for r in held(await snapshot(sandbox, "shopify"), sale)["returns"]]
    assert delivery["tracking_number"] == result.state.ids.tracking_number
    shipments = [s for s in (await snapshot(sandbox, "carrier"))["shipments"]
                 if s["reference"] == return_reference(request.key)]  # fmt: skip
    assert [(s["is_return"], s["purchased"]) for s in shipments] == [(True, True)]
    if answers_lost:
        fired = [rule["fired"] for rule in (await sandbox.get("/sandbox/faults")).json()]
        assert fired == [1, 1, 1, 1, 1]
