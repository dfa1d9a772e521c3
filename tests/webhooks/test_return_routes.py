"""Shopify returns and refunds into the service: a return starts one return saga, an admin refund is booked once."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle

from orderflow.canonical.channel_refund import ChannelRefundInput
from orderflow.canonical.return_saga import ReturnOrigin, ReturnToRefundInput
from orderflow.temporal import CHANNEL, RETURN_STATUS

from .conftest import WebhookHarness
from .saga_stand_in import QUERY_RECORDING, ReturnRecording

pytestmark = pytest.mark.integration


def refund_body(order_id: str, refund_id: int, *, note: str | None = "goodwill") -> dict[str, Any]:
    """A REST-shaped `refunds/create` body: one unit of one line, with its tax, refunded to the card."""
    return {
        "id": refund_id,
        "order_id": int(order_id),
        "note": note,
        "refund_line_items": [
            {
                "id": refund_id + 1,
                "line_item_id": 15518907892000,
                "quantity": 1,
                "restock_type": "no_restock",
                "subtotal": 12.5,
                "subtotal_set": {"shop_money": {"amount": "12.50", "currency_code": "USD"}},
                "total_tax": 1.03,
                "total_tax_set": {"shop_money": {"amount": "1.03", "currency_code": "USD"}},
                "line_item": {"id": 15518907892000, "sku": "BOLT-M8-S", "quantity": 2, "price": "12.50"},
            }
        ],
        "transactions": [{"kind": "refund", "status": "success", "amount": "13.53", "currency": "USD"}],
        "order_adjustments": [],
    }


def return_body(order_id: str, return_id: int, *, with_skus: bool = True) -> dict[str, Any]:
    """A REST-shaped `returns/request` body; Shopify's own names line items by id only (`with_skus=False`)."""
    line_item: dict[str, Any] = {"id": 15518907892000}
    if with_skus:
        line_item["sku"] = "BOLT-M8-S"
    return {
        "id": return_id,
        "status": "requested",
        "created_at": "2026-03-10T09:00:00-05:00",
        "order": {"id": int(order_id)},
        "return_line_items": [
            {
                "id": return_id + 1,
                "fulfillment_line_item": {"id": 55, "line_item": line_item},
                "quantity": 1,
                "return_reason": "size_too_small",
            }
        ],
    }


async def first_input(handle: WorkflowHandle[Any, Any]) -> Any:
    """The input the workflow was started with, as the pydantic converter wrote it (JSON)."""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            payload = event.workflow_execution_started_event_attributes.input.payloads[0]
            return json.loads(payload.data)
    raise AssertionError("no started event")


async def test_a_refund_made_in_shopify_admin_starts_one_booking_and_a_redelivery_starts_none(
    harness: WebhookHarness,
) -> None:
    order_id = harness.new_order_id()
    refund_id = 880_000 + uuid.uuid4().int % 100_000
    raw = json.dumps(refund_body(order_id, refund_id)).encode()
    key = f"refund:shopify:{refund_id}"
    harness.keys.append(key)

    first = await harness.dispatched(await harness.post_shopify("refunds/create", raw))
    again = await harness.dispatched(await harness.post_shopify("refunds/create", raw))

    assert (first.status, first.outcome, first.workflow_id) == ("dispatched", "started", key)
    assert again.status == "duplicate" and again.workflow_id == key
    handle = harness.temporal.get_workflow_handle(key)
    described = await handle.describe()
    assert described.workflow_type == "ChannelRefund"
    assert described.typed_search_attributes.get(CHANNEL) == "shopify"
    booking = ChannelRefundInput.model_validate(await first_input(handle))
    assert booking.refund.order_key == f"order:shopify:{order_id}"
    assert [(line.sku, line.quantity, str(line.amount.amount)) for line in booking.refund.lines] == [
        ("BOLT-M8-S", 1, "13.53")
    ]
    assert str(booking.refund.total.amount) == "13.53"


async def test_a_refund_orderflow_issued_is_acknowledged_and_not_echoed_back(harness: WebhookHarness) -> None:
    order_id = harness.new_order_id()
    refund_id = 890_000 + uuid.uuid4().int % 100_000
    body = refund_body(order_id, refund_id, note="return refund [orderflow:OFR-shopify-5001-refund]")

    response = await harness.post_shopify("refunds/create", json.dumps(body).encode())

    assert response.status_code == 200
    assert response.json()["status"] == "ignored" and "orderflow issued" in response.json()["reason"]
    assert (await harness.dispatched(response)).status == "ignored"


async def test_a_return_request_starts_the_returns_saga_once_and_a_cancel_on_shopify_signals_it(
    harness: WebhookHarness,
) -> None:
    order_id = harness.new_order_id()
    return_id = 770_000 + uuid.uuid4().int % 100_000
    key = f"return:shopify:{return_id}"
    harness.keys.append(key)
    body = return_body(order_id, return_id)

    requested = await harness.dispatched(await harness.post_shopify("returns/request", json.dumps(body).encode()))
    approved = await harness.dispatched(
        await harness.post_shopify("returns/approve", json.dumps({**body, "status": "open"}).encode())
    )
    cancelled = await harness.dispatched(
        await harness.post_shopify("returns/cancel", json.dumps({**body, "status": "canceled"}).encode())
    )

    assert (requested.outcome, requested.workflow_id) == ("started", key)
    # The approval names the same return: the saga that runs is the first one.
    assert approved.status == "duplicate" and approved.workflow_id == key
    assert (cancelled.outcome, cancelled.workflow_id) == ("signalled", key)
    handle = harness.temporal.get_workflow_handle(key)
    described = await handle.describe()
    assert described.workflow_type == "ReturnToRefund"
    assert described.typed_search_attributes.get(RETURN_STATUS) == "REQUESTED"
    started = ReturnToRefundInput.model_validate(await first_input(handle))
    assert started.origin is ReturnOrigin.CHANNEL
    assert started.return_request.order_key == f"order:shopify:{order_id}"
    assert [(line.sku, line.quantity) for line in started.return_request.lines] == [("BOLT-M8-S", 1)]
    for _ in range(100):
        recording = await handle.query(QUERY_RECORDING, result_type=ReturnRecording)
        if recording.cancels:
            break
        await asyncio.sleep(0.05)
    assert [(c.source.value, c.reason) for c in recording.cancels] == [("channel", "return cancelled on Shopify")]


async def test_a_return_without_an_order_gets_422_naming_the_field_and_starts_nothing(
    harness: WebhookHarness,
) -> None:
    body = return_body(harness.new_order_id(), 760_001)
    del body["order"]

    response = await harness.post_shopify("returns/request", json.dumps(body).encode())

    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "order.id"
    assert (await harness.dispatched(response)).status == "rejected"
