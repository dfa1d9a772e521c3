"""Shopify's cost-based throttle and error taxonomy: the math, and the client's reaction to each answer."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from graphql import parse

from orderflow.adapters.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
    ValidationRejectedError,
)
from orderflow.adapters.shopify import (
    ShopifyClient,
    graphql_errors_to_exception,
    throttle_wait_seconds,
    user_errors_to_exception,
)
from orderflow.sandbox.shopify_graphql import CostCalculator, operation_of, schema_for
from orderflow.settings import ShopifySettings


def _cost(requested: int, available: float, restore: float = 50.0) -> dict[str, Any]:
    return {
        "requestedQueryCost": requested,
        "actualQueryCost": None,
        "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": available, "restoreRate": restore},
    }


THROTTLED = {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}


def test_throttle_wait_is_the_missing_points_over_the_restore_rate() -> None:
    assert throttle_wait_seconds(_cost(752, 2, 100.0)) == pytest.approx(7.5)
    assert throttle_wait_seconds(_cost(10, 500)) == 0.0
    assert throttle_wait_seconds(None) is None
    assert throttle_wait_seconds({"requestedQueryCost": 5}) is None


def test_access_denied_is_an_authentication_error_keeping_the_code() -> None:
    error = graphql_errors_to_exception(
        [{"message": "Access denied for orders field.", "extensions": {"code": "ACCESS_DENIED"}}], 200
    )
    assert isinstance(error, AuthenticationError)
    assert error.vendor_code == "ACCESS_DENIED"
    assert "Access denied" in error.message


def test_internal_errors_are_transient_and_query_errors_permanent() -> None:
    internal = graphql_errors_to_exception([{"message": "x", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}], 200)
    too_big = graphql_errors_to_exception([{"message": "cost", "extensions": {"code": "MAX_COST_EXCEEDED"}}], 200)
    assert isinstance(internal, TransientError)
    assert isinstance(too_big, PermanentError) and too_big.vendor_code == "MAX_COST_EXCEEDED"


def test_user_errors_are_classified_with_their_fields_and_messages() -> None:
    conflict = user_errors_to_exception(
        [{"field": ["fulfillment"], "message": "Fulfillment order 1 has an unfulfillable status= closed."}],
        "fulfillmentCreate",
    )
    stale = user_errors_to_exception(
        [{"field": ["input", "quantities", "0"], "message": "mismatch", "code": "COMPARE_QUANTITY_STALE"}], "set"
    )
    missing = user_errors_to_exception([{"field": ["orderId"], "message": "gone", "code": "NOT_FOUND"}], "orderCancel")
    invalid = user_errors_to_exception([{"field": ["input", "note"], "message": "Note is too long"}], "refundCreate")

    assert isinstance(conflict, ConflictError)
    assert "fulfillment: Fulfillment order 1 has an unfulfillable status= closed." in conflict.message
    assert isinstance(stale, ConflictError) and stale.vendor_code == "COMPARE_QUANTITY_STALE"
    assert isinstance(missing, NotFoundError)
    assert type(invalid) is ValidationRejectedError
    assert invalid.details == [{"field": ["input", "note"], "message": "Note is too long"}]


def _client(handler: Any, **overrides: Any) -> tuple[ShopifyClient, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    settings = ShopifySettings(base_url="http://127.0.0.1:1/shopify", **overrides)
    return ShopifyClient(http, settings), http


async def test_a_short_throttle_is_waited_out_and_the_call_retried() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(200, json={**THROTTLED, "extensions": {"cost": _cost(20, 15, 50.0)}})
        return httpx.Response(200, json={"data": {"shop": {"name": "x"}}, "extensions": {"cost": _cost(1, 999)}})

    client, http = _client(handler)
    async with http:
        data = await client.execute("{ shop { name } }")

    assert data == {"shop": {"name": "x"}}
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.1  # (20 - 15) / 50


async def test_a_long_throttle_goes_back_to_temporal_with_the_wait() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={**THROTTLED, "extensions": {"cost": _cost(900, 0, 50.0)}})

    client, http = _client(handler, max_throttle_wait_seconds=5.0)
    async with http:
        with pytest.raises(RateLimitedError) as caught:
            await client.execute("{ shop { name } }")

    assert caught.value.retry_after == pytest.approx(18.0)
    assert caught.value.vendor_code == "THROTTLED"


async def test_throttle_retries_inside_a_call_are_bounded() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={**THROTTLED, "extensions": {"cost": _cost(1, 0, 1000.0)}})

    client, http = _client(handler)
    async with http:
        with pytest.raises(RateLimitedError):
            await client.execute("{ shop { name } }")

    assert calls == 4


async def test_the_access_token_is_sent_in_shopifys_header_and_never_elsewhere() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"shop": {"name": "x"}}})

    client, http = _client(handler)
    async with http:
        await client.execute("query Q($a: Int) { shop { name } }", {"a": 1})

    (request,) = seen
    assert request.headers["X-Shopify-Access-Token"] == "shpat_sandbox_0000000000000000"
    assert request.url.path == "/shopify/admin/api/2025-10/graphql.json"
    assert json.loads(request.content) == {"query": "query Q($a: Int) { shop { name } }", "variables": {"a": 1}}


def test_requested_cost_counts_objects_and_page_sizes() -> None:
    schema = schema_for("2025-10")
    document = parse("{ orders(first: 10) { nodes { id customer { id } lineItems(first: 5) { nodes { sku } } } } }")
    operation = operation_of(document, None)
    assert operation is not None

    # orders: 2 + 10 x (order 1 + customer 1 + lineItems (2 + 5 x 1))
    assert CostCalculator(schema, document, {}).cost(operation) == 2 + 10 * (1 + 1 + 2 + 5)


def test_actual_cost_counts_what_came_back() -> None:
    schema = schema_for("2025-10")
    document = parse("query($n: Int) { orders(first: $n) { nodes { id customer { id } } } }")
    operation = operation_of(document, None)
    assert operation is not None
    data = {"orders": {"nodes": [{"id": "1", "customer": None}, {"id": "2", "customer": {"id": "c"}}]}}

    calculator = CostCalculator(schema, document, {"n": 50})
    assert calculator.cost(operation) == 2 + 50 * 2
    assert calculator.cost(operation, data) == 2 + 2 + 2


def test_a_mutation_costs_ten() -> None:
    schema = schema_for("2025-10")
    document = parse('mutation { webhookSubscriptionDelete(id: "x") { deletedWebhookSubscriptionId } }')
    operation = operation_of(document, None)
    assert operation is not None

    assert CostCalculator(schema, document, {}).cost(operation) == 10
