"""Shopify webhooks into the service: a signed order starts one saga; bad input starts none and says why."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError, RPCStatusCode

from orderflow.adapters.shopify import order_from_webhook
from orderflow.canonical.saga import CancelRequest, CancelSource
from orderflow.settings import Settings, ShopifySettings
from orderflow.temporal import CHANNEL, CUSTOMER_ID, NEEDS_ATTENTION, ORDER_STATUS, ORDER_TOTAL
from orderflow.webhooks.app import create_app

from .conftest import WebhookHarness, shopify_order

pytestmark = pytest.mark.integration


async def assert_no_saga(harness: WebhookHarness, key: str) -> None:
    with pytest.raises(RPCError) as refused:
        await harness.temporal.get_workflow_handle(key).describe()
    assert refused.value.status is RPCStatusCode.NOT_FOUND


async def test_a_signed_order_starts_one_saga_with_its_order_arrival_time_and_search_attributes(
    harness: WebhookHarness,
) -> None:
    order_id = harness.new_order_id()
    body = shopify_order(order_id)
    before = time.time_ns() // 1_000_000

    response = await harness.post_shopify("orders/create", json.dumps(body).encode())

    after = time.time_ns() // 1_000_000
    key = f"order:shopify:{order_id}"
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    row = await harness.dispatched(response)
    assert (row.status, row.outcome, row.workflow_id) == ("dispatched", "started", key)
    recording = await harness.recording(key)
    assert recording.input.order == order_from_webhook(body)
    assert recording.input.received_at_epoch_ms is not None
    assert before <= recording.input.received_at_epoch_ms <= after
    described = await harness.temporal.get_workflow_handle(key).describe()
    assert (described.workflow_type, described.task_queue) == ("OrderToCash", harness.task_queue)
    attributes = described.typed_search_attributes
    assert attributes.get(ORDER_STATUS) == "RECEIVED"
    assert attributes.get(CHANNEL) == "shopify"
    assert attributes.get(CUSTOMER_ID) == "207119552"
    assert attributes.get(NEEDS_ATTENTION) is False
    assert attributes.get(ORDER_TOTAL) == 84.95


async def test_a_duplicate_delivery_answers_duplicate_and_the_order_keeps_one_saga(harness: WebhookHarness) -> None:
    order_id = harness.new_order_id()
    key = f"order:shopify:{order_id}"
    raw = json.dumps(shopify_order(order_id)).encode()

    first = await harness.dispatched(await harness.post_shopify("orders/create", raw))
    handle = harness.temporal.get_workflow_handle(key)
    run_id = (await handle.describe()).run_id
    again = await harness.dispatched(await harness.post_shopify("orders/create", raw))
    await handle.terminate("an operator ended it")
    after_close = await harness.dispatched(await harness.post_shopify("orders/create", raw))

    assert first.outcome == "started"
    # The same order under new event ids: stored, and found to be a saga that already exists.
    for duplicate in (again, after_close):
        assert duplicate.status == "duplicate" and duplicate.workflow_id == key
        assert key in (duplicate.outcome or "")
    # Still the first run: neither redelivery started another, not even after the saga closed.
    assert (await handle.describe()).run_id == run_id
    starts = [
        e
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    ]
    assert len(starts) == 1


async def test_a_bad_signature_gets_401_and_starts_no_saga(harness: WebhookHarness) -> None:
    order_id = harness.new_order_id()

    response = await harness.post_shopify(
        "orders/create", json.dumps(shopify_order(order_id)).encode(), secret="shpss_not_our_secret"
    )

    assert response.status_code == 401
    assert "X-Shopify-Hmac-Sha256" in response.json()["detail"]
    await assert_no_saga(harness, f"order:shopify:{order_id}")


async def test_a_body_signed_with_the_previous_secret_is_accepted_during_a_rotation(
    harness: WebhookHarness, settings: Settings
) -> None:
    rotated = ShopifySettings(
        base_url=settings.shopify.base_url,
        client_secret="shpss_new_secret_after_rotation",
        previous_client_secret=settings.shopify.client_secret,
    )
    app = create_app(
        settings.model_copy(update={"shopify": rotated}),
        temporal=harness.gateway,
        database=harness.inbox.database,
        relay=False,
    )
    order_id = harness.new_order_id()
    raw = json.dumps(shopify_order(order_id)).encode()
    old_secret = settings.shopify.client_secret.get_secret_value()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhooks") as rotating:
        with_old = await harness.post_shopify("orders/create", raw, secret=old_secret, via=rotating)
        with_neither = await harness.post_shopify("orders/create", raw, secret="shpss_other", via=rotating)

    assert with_old.status_code == 200 and with_old.json()["status"] == "accepted"
    assert (await harness.dispatched(with_old)).outcome == "started"
    assert with_neither.status_code == 401


async def test_an_unparseable_body_gets_400_with_the_reason(harness: WebhookHarness) -> None:
    response = await harness.post_shopify("orders/create", b'{"id": 9001, "line_items": [')

    assert response.status_code == 400
    assert "not JSON" in response.json()["detail"]


async def test_an_order_with_an_empty_sku_gets_422_naming_the_field_and_starts_no_saga(
    harness: WebhookHarness,
) -> None:
    order_id = harness.new_order_id()
    body = shopify_order(order_id, [("BOLT-M8-S", 1), ("", 2)])

    response = await harness.post_shopify("orders/create", json.dumps(body).encode())

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["field"] == "line_items[1].sku"
    assert "empty SKU" in detail["reason"]
    await assert_no_saga(harness, f"order:shopify:{order_id}")


async def test_a_cancelled_order_signals_cancel_from_the_channel(harness: WebhookHarness) -> None:
    key = await harness.start_saga()
    order_id = key.rsplit(":", 1)[-1]

    response = await harness.post_shopify(
        "orders/cancelled", json.dumps(shopify_order(order_id, cancelled=True)).encode()
    )

    assert response.status_code == 200
    assert (await harness.dispatched(response)).outcome == "signalled"
    recording = await harness.wait_for(key, lambda r: bool(r.cancels))
    assert recording.cancels == [
        CancelRequest(
            source=CancelSource.CHANNEL,
            reason="cancelled on Shopify (customer)",
            requested_by="orderflow-sandbox.myshopify.com",
        )
    ]


async def test_cancelling_an_order_without_a_saga_is_acknowledged_and_ignored(harness: WebhookHarness) -> None:
    order_id = harness.new_order_id()

    response = await harness.post_shopify(
        "orders/cancelled", json.dumps(shopify_order(order_id, cancelled=True)).encode()
    )

    assert response.status_code == 200
    row = await harness.dispatched(response)
    assert row.status == "ignored" and f"order:shopify:{order_id}" in (row.outcome or "")


async def test_cancelling_an_order_whose_saga_already_closed_is_acknowledged_and_ignored(
    harness: WebhookHarness,
) -> None:
    key = await harness.start_saga()
    await harness.temporal.get_workflow_handle(key).terminate("ended before the cancellation arrived")
    cancelled = shopify_order(key.rsplit(":", 1)[-1], cancelled=True)

    response = await harness.post_shopify("orders/cancelled", json.dumps(cancelled).encode())

    assert response.status_code == 200
    row = await harness.dispatched(response)
    assert (row.status, row.outcome) == ("ignored", f"ignored: no running saga for {key}")


async def test_other_topics_are_acknowledged_and_ignored(harness: WebhookHarness) -> None:
    order_id = harness.new_order_id()

    response = await harness.post_shopify("orders/updated", json.dumps(shopify_order(order_id)).encode())

    assert response.status_code == 200
    assert response.json() == {
        "status": "ignored",
        "order_keys": [],
        "reason": "topic 'orders/updated' starts or changes no saga",
    }
    await assert_no_saga(harness, f"order:shopify:{order_id}")
