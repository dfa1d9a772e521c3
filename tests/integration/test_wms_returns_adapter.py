"""The warehouse's side of a return and of a partial cancellation, through the adapter, against the simulator.

Stock is checked in `/sandbox/state/wms`: sellable units go back on the shelf, damaged ones never do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from contracts.returns_sandbox import WebhookReceiver, add_fault, system_state, tick_until, until_done
from contracts.shipbob import assert_conforms, response_schema
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, split_only_sku, stock_cell, vendor_client

from orderflow.adapters.errors import ConflictError, ValidationRejectedError
from orderflow.adapters.wms import (
    RETURN_RECEIPT_TOPIC,
    WmsClient,
    return_payload,
    return_receipt_from_webhook,
    verify_webhook,
)
from orderflow.canonical import FulfillmentStatus, ItemCondition, ReturnLine
from orderflow.sandbox.seed import CATALOG_BY_SKU
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def wms(http: httpx.AsyncClient, settings: Settings) -> WmsClient:
    return WmsClient(http, settings.wms)


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    with BackgroundServer(hook.app) as server:
        yield hook, f"{server.url}/hooks/wms"


async def shipped_order(wms: WmsClient, settings: Settings, reference: str, lines: list[tuple[str, int]]) -> str:
    """A fulfillment order the warehouse has labelled (shipped); its WMS id."""
    order = await wms.create_order(fulfillment_request(reference, lines, warehouse_id="8"))
    async with vendor_client(settings) as vendor:
        response = await vendor.post(
            "/simulate/shipment", json={"order_id": order.wms_order_id, "simulation": {"action": "ShipOrder"}}
        )
        response.raise_for_status()
    return order.wms_order_id


async def completed_body(sandbox: httpx.AsyncClient, wms_return_id: str) -> dict[str, object]:
    """The body of the `return.completed` event the sandbox emitted for a return (from its outbox)."""
    deliveries = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "wms"})).json()
    for delivery in deliveries:
        payload = json.loads(delivery["body"])
        if delivery["topic"] == RETURN_RECEIPT_TOPIC and str(payload.get("id")) == wms_return_id:
            return dict(payload)
    raise AssertionError(f"no return.completed for return {wms_return_id}")


async def test_a_return_is_created_once_received_and_only_sellable_units_restocked(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient, receiver: tuple[WebhookReceiver, str]
) -> None:
    hook, url = receiver
    secret = await wms.subscribe_webhooks(url, [RETURN_RECEIPT_TOPIC])
    first, second = plentiful_skus(2)
    order_id = await shipped_order(wms, settings, "order:shopify:7001", [(first, 3), (second, 2)])
    before = await system_state(sandbox, "wms")
    lines = [ReturnLine(sku=first, quantity=2), ReturnLine(sku=second, quantity=1)]

    # The answer to the create is lost: the adapter reads the return back instead of making another.
    await add_fault(sandbox, "wms", kind="timeout_after_commit", method="POST", path="/2026-01/return", times=1)
    created = await wms.create_return("return:shopify:R-7001", lines=lines, original_wms_order_id=order_id,
                                      tracking_number="EZ4000000004")  # fmt: skip
    assert [rule["fired"] for rule in (await sandbox.get("/sandbox/faults")).json()] == [1]
    assert await wms.create_return("return:shopify:R-7001", lines=lines, original_wms_order_id=order_id) == created
    assert (created.status, created.warehouse_id, created.tracking_number) == ("Awaiting Arrival", "8", "EZ4000000004")
    assert sorted((ln.sku, ln.quantity) for ln in created.lines) == sorted([(first, 2), (second, 1)])
    assert await wms.find_return("return:shopify:R-7001") == created
    assert await wms.find_return("return:shopify:none") is None
    state = await system_state(sandbox, "wms")
    assert [r["id"] for r in state["returns"] if r["reference_id"] == "return:shopify:R-7001"] == [
        int(created.wms_return_id)
    ]

    first_id = CATALOG_BY_SKU[first].wms_inventory_id
    async with vendor_client(settings) as vendor:
        await vendor.post("/simulate/return", json={"return_id": created.wms_return_id, "actions": [
            {"inventory_id": first_id, "action": "Restock", "quantity": 1},
            {"inventory_id": first_id, "action": "Dispose", "quantity": 1, "reason": "Damaged"},
        ]})  # fmt: skip
    await tick_until(sandbox, lambda: bool(hook.bodies("x-webhook-topic", RETURN_RECEIPT_TOPIC)))
    ((headers, raw),) = hook.bodies("x-webhook-topic", RETURN_RECEIPT_TOPIC)
    clock = (await sandbox.get("/sandbox/clock")).json()
    assert verify_webhook(raw, headers, secret, now=datetime.fromisoformat(clock["now"]))
    receipt = return_receipt_from_webhook(json.loads(raw))
    assert (receipt.wms_return_id, receipt.reference) == (created.wms_return_id, "return:shopify:R-7001")
    assert receipt.sellable == {first: 1, second: 1}
    assert receipt.damaged == {first: 1}
    assert return_receipt_from_webhook(json.loads(raw)).receipt_id == receipt.receipt_id

    levels = await wms.restock_return(created.wms_return_id, receipt)
    assert await wms.restock_return(created.wms_return_id, receipt) == levels
    after = await system_state(sandbox, "wms")
    assert {(lv.sku, lv.warehouse_id, lv.on_hand) for lv in levels} == {
        (sku, "8", stock_cell(after, sku, 8)["on_hand"]) for sku in (first, second)
    }
    # One of the two firsts came back sellable, the other was disposed; the second came back sellable.
    assert stock_cell(after, first, 8)["on_hand"] == stock_cell(before, first, 8)["on_hand"] + 1
    assert stock_cell(after, second, 8)["on_hand"] == stock_cell(before, second, 8)["on_hand"] + 1
    assert stock_cell(after, first, 11) == stock_cell(before, first, 11)
    assert (await wms.get_return(created.wms_return_id)).status == "Completed"
    with pytest.raises(ConflictError):  # the warehouse restocked one, not two
        await wms.restock_return(
            created.wms_return_id,
            receipt.model_copy(update={"lines": [*receipt.lines, receipt.lines[0]]}),
        )
    with pytest.raises(ConflictError):  # received: too late to cancel
        await wms.cancel_return(created.wms_return_id)


async def test_a_return_not_yet_received_is_cancelled_once(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    created = await wms.create_return("return:shopify:R-7002", lines=[ReturnLine(sku=sku, quantity=1)],
                                      warehouse_id="11")  # fmt: skip
    cancelled = await wms.cancel_return(created.wms_return_id)
    assert cancelled.status == "Cancelled"
    assert await wms.cancel_return(created.wms_return_id) == cancelled
    with pytest.raises(ValidationRejectedError):  # nowhere to send it: no warehouse, no shipped order
        await wms.create_return("return:shopify:R-7003", lines=[ReturnLine(sku=sku, quantity=1)])
    state = await system_state(sandbox, "wms")
    assert [r["status"] for r in state["returns"]] == ["Cancelled"]


def test_a_receipt_needs_a_completed_return() -> None:
    with pytest.raises(ValueError, match="status"):
        return_receipt_from_webhook({"id": 1, "status": "Arrived", "inventory": []})
    with pytest.raises(ValueError, match="id"):
        return_receipt_from_webhook({"status": "Completed"})
    body = {"id": 5, "reference_id": "r", "status": "Completed", "completed_date": "2026-01-02T03:04:05Z",
            "inventory": [{"sku": "BOLT-M8-S", "quantity": 2, "action_taken": [
                {"action": "Quarantine", "action_reason": "Opened", "quantity_processed": 2}]}]}  # fmt: skip
    receipt = return_receipt_from_webhook(body)
    assert [(ln.sku, ln.quantity, ln.condition) for ln in receipt.lines] == [("BOLT-M8-S", 2, ItemCondition.DAMAGED)]
    with pytest.raises(ValueError, match="nothing received"):
        return_receipt_from_webhook({**body, "inventory": [{"sku": "BOLT-M8-S", "quantity": 2, "action_taken": []}]})


async def test_demo_mode_receives_returns_by_itself_with_the_configured_damaged_share(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    await sandbox.post("/sandbox/webhooks/subscriptions/wms", json={"topics": ["*"], "url": "http://127.0.0.1:9/x"})
    demo = (await sandbox.get("/sandbox/demo")).json()
    await sandbox.put("/sandbox/demo", json={**demo, "wms_return_receive_after_seconds": 3600,
                                             "wms_return_damaged_share": 1.0})  # fmt: skip
    first, second = plentiful_skus(2)
    before = await system_state(sandbox, "wms")
    damaged = await wms.create_return("return:shopify:R-7004", lines=[ReturnLine(sku=first, quantity=3)],
                                      warehouse_id="8")  # fmt: skip
    await sandbox.post("/sandbox/tick")
    assert (await wms.get_return(damaged.wms_return_id)).status == "Awaiting Arrival"
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 3601})
    await sandbox.post("/sandbox/tick")
    assert (await wms.get_return(damaged.wms_return_id)).status == "Completed"
    receipt = return_receipt_from_webhook(await completed_body(sandbox, damaged.wms_return_id))
    assert (receipt.sellable, receipt.damaged) == ({}, {first: 3})
    assert await wms.restock_return(damaged.wms_return_id, receipt) == []

    await sandbox.put("/sandbox/demo", json={**demo, "wms_return_receive_after_seconds": 60,
                                             "wms_return_damaged_share": 0.0})  # fmt: skip
    sound = await wms.create_return("return:shopify:R-7005", lines=[ReturnLine(sku=second, quantity=2)],
                                    warehouse_id="8")  # fmt: skip
    await sandbox.post("/sandbox/clock/advance", json={"seconds": 61})
    await sandbox.post("/sandbox/tick")
    receipt = return_receipt_from_webhook(await completed_body(sandbox, sound.wms_return_id))
    assert (receipt.sellable, receipt.damaged) == ({second: 2}, {})
    after = await system_state(sandbox, "wms")
    assert stock_cell(after, first, 8)["on_hand"] == stock_cell(before, first, 8)["on_hand"]
    assert stock_cell(after, second, 8)["on_hand"] == stock_cell(before, second, 8)["on_hand"] + 2


async def test_unshipped_units_are_cut_once_and_shipped_ones_left_alone(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful_skus(2)
    order = await wms.create_order(fulfillment_request("order:shopify:7006", [(first, 3), (second, 2)],
                                                       warehouse_id="8"))  # fmt: skip
    committed = stock_cell(await system_state(sandbox, "wms"), first, 8)["committed"]

    await add_fault(sandbox, "wms", kind="timeout_after_commit", path="*:updateLineItems", times=1)
    cut = await until_done(lambda: wms.cancel_order_lines(order.wms_order_id, {first: 1}))
    assert sorted((ln.sku, ln.quantity) for ln in cut.lines) == sorted([(first, 2), (second, 2)])
    assert await wms.cancel_order_lines(order.wms_order_id, {first: 1}) == cut
    state = await system_state(sandbox, "wms")
    assert stock_cell(state, first, 8)["committed"] == committed - 1
    (shipment,) = next(o for o in state["orders"] if o["reference_id"] == "order:shopify:7006")["shipments"]
    assert sorted((ln["sku"], ln["quantity"]) for ln in shipment["lines"]) == sorted([(first, 2), (second, 2)])

    everything = await wms.cancel_order_lines(order.wms_order_id, {first: 3, second: 2})
    assert (everything.status, everything.lines) == (FulfillmentStatus.CANCELLED, [])
    assert stock_cell(await system_state(sandbox, "wms"), first, 8)["committed"] == committed - 3
    with pytest.raises(ValidationRejectedError):
        await wms.cancel_order_lines(order.wms_order_id, {"BOLT-M8-XL": 1})


async def test_a_split_order_keeps_its_shipped_parcel_and_loses_the_unshipped_one(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    sku, quantity = split_only_sku()
    order = await wms.create_order(fulfillment_request("order:shopify:7007", [(sku, quantity)]))
    assert len(order.shipment_ids) == 2
    async with vendor_client(settings) as vendor:
        await vendor.post("/simulate/shipment", json={"shipment_id": int(order.shipment_ids[0]),
                                                      "simulation": {"action": "ShipOrder"}})  # fmt: skip
    shipped = sum(ln.quantity for s in await wms.list_shipments(order.wms_order_id) for ln in s.lines)
    after = await wms.cancel_order_lines(order.wms_order_id, {sku: quantity})
    assert after.lines[0].quantity == shipped and after.status is FulfillmentStatus.FULFILLED
    state = await system_state(sandbox, "wms")
    shipments = next(o for o in state["orders"] if o["reference_id"] == "order:shopify:7007")["shipments"]
    assert sorted(s["status"] for s in shipments) == ["Cancelled", "LabeledCreated"]


async def test_return_and_line_item_answers_match_shipbobs_schema(
    wms: WmsClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    first, second = plentiful_skus(2)
    body = return_payload("RMA-7008", {CATALOG_BY_SKU[first].wms_inventory_id: 1}, warehouse_id="8",
                          original_shipment_id=None, tracking_number="1Z999")  # fmt: skip
    assert_conforms("Returns.CreateReturnRequest", body)
    order = await wms.create_order(fulfillment_request("order:shopify:7008", [(first, 2), (second, 1)],
                                                       warehouse_id="8"))  # fmt: skip
    shipment_id = order.shipment_ids[0]
    async with vendor_client(settings) as vendor:
        created = await vendor.post("/return", json=body)
        assert_conforms(response_schema("/2026-01/return", "post", 201), created.json())
        items = await vendor.get(f"/shipment/{shipment_id}:getLineItems")
        assert_conforms(response_schema("/2026-01/shipment/{shipmentId}:getLineItems", "get", 200), items.json())
        kept = [{**items.json()[0], "quantity": 1}]
        updated = await vendor.post(f"/shipment/{shipment_id}:updateLineItems", json={"items": kept})
        answer = response_schema("/2026-01/shipment/{shipmentId}:updateLineItems", "post", 200)
        assert_conforms(answer, updated.json())
        assert [(c["action"], c["new_value"]) for c in updated.json()["shipment_line_items"]] == [
            ("Updated", "1"), ("Removed", "0")]  # fmt: skip
        refused = await vendor.post(f"/shipment/{shipment_id}:updateLineItems", json={"items": []})
        assert refused.status_code == 400
        cancelled = await vendor.post(f"/shipment/{shipment_id}:cancel")
        assert_conforms(response_schema("/2026-01/shipment/{shipmentId}:cancel", "post", 200), cancelled.json())
        assert cancelled.json()["status"] == "Cancelled"
