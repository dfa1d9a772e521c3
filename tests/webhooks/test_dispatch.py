"""The dispatch layer's decisions, without a server: what counts as Temporal being away, what a saga starts with."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from temporalio.service import RPCError, RPCStatusCode

from orderflow.adapters.shopify import order_from_webhook
from orderflow.canonical.saga import TASK_QUEUE
from orderflow.temporal import CUSTOMER_ID, DEFAULT_ADDRESS, DEFAULT_NAMESPACE, ORDER_TOTAL, initial_search_attributes
from orderflow.webhooks.dispatch import (
    TemporalGateway,
    TemporalUnavailableError,
    is_valid_tracking_number,
    temporal_call,
)

from .conftest import shopify_order


@pytest.mark.parametrize("status", [RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED])
async def test_an_unreachable_or_slow_server_means_temporal_is_unavailable(status: RPCStatusCode) -> None:
    with pytest.raises(TemporalUnavailableError) as unavailable:
        async with temporal_call("starting order:shopify:1"):
            raise RPCError("connection reset", status, b"")

    assert unavailable.value.reason == "Temporal unavailable while starting order:shopify:1: connection reset"


@pytest.mark.parametrize("status", [RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT])
async def test_a_refused_request_is_not_mistaken_for_an_outage(status: RPCStatusCode) -> None:
    with pytest.raises(RPCError) as refused:
        async with temporal_call("signalling cancel"):
            raise RPCError("no such thing", status, b"")

    assert refused.value.status is status


async def test_a_call_the_sdk_keeps_retrying_is_cut_at_the_deadline_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("orderflow.webhooks.dispatch.CALL_DEADLINE", timedelta(milliseconds=50))

    with pytest.raises(TemporalUnavailableError) as unavailable:
        async with temporal_call("starting order:shopify:1"):
            await asyncio.sleep(5)  # a dead server, retried inside the SDK

    assert unavailable.value.reason.startswith("Temporal did not answer within 0:00:00.050000 while starting")


def test_a_guest_checkout_is_found_by_email_and_the_total_is_a_float_for_the_ui() -> None:
    body = shopify_order("9000000000002")
    del body["customer"]
    order = order_from_webhook(json.loads(json.dumps(body)))

    attributes = initial_search_attributes(order)

    assert attributes.get(CUSTOMER_ID) == "grace@example.com"
    assert attributes.get(ORDER_TOTAL) == 84.95
    # Search attributes are plaintext in history even with payload encryption on: then no email.
    assert initial_search_attributes(order, hide_emails=True).get(CUSTOMER_ID) is None


def test_tracking_numbers_that_could_end_a_quoted_query_are_refused() -> None:
    assert is_valid_tracking_number("EZ4000000004")
    assert is_valid_tracking_number("1Z999AA10123456784")
    assert not is_valid_tracking_number("EZ' OR '1'='1")
    assert not is_valid_tracking_number("")


def test_the_gateway_reads_temporal_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    monkeypatch.delenv("TEMPORAL_NAMESPACE", raising=False)
    default = TemporalGateway.from_env()
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.internal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "orders-prod")
    configured = TemporalGateway.from_env(task_queue="orders-canary")

    assert (default.address, default.namespace, default.task_queue) == (DEFAULT_ADDRESS, DEFAULT_NAMESPACE, TASK_QUEUE)
    assert (configured.address, configured.namespace, configured.task_queue) == (
        "temporal.internal:7233",
        "orders-prod",
        "orders-canary",
    )
