"""Bad input on every webhook route: never a 5xx, never a saga, every refusal stored or counted with a reason.

The fuzz runs against the inbox on SQLite and on PostgreSQL (the `database` fixture). The service
runs in this test's event loop over ASGI; hypothesis drives it from a thread, one request at a time.
Temporal is nowhere: the gateway counts every attempt to reach it, and a relay pass after the fuzz
must find nothing to dispatch, so no bad input can have started (or later start) a saga.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from temporalio.client import Client

from orderflow.sandbox.carrier import signature_header
from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxEvent, InboxStatus
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway, TemporalUnavailableError
from orderflow.webhooks.inbox import INBOX_ID_HEADER, MAX_BODY_BYTES, WebhookInbox
from orderflow.webhooks.relay import Relay

from .conftest import shopify_hmac, shopify_order

T = TypeVar("T")
ROUTES = ["shopify", "wms", "carrier"]
# Per database: enough to meet every kind of body on every route with each signing, in about 2 s.
EXAMPLES = 200


class NoTemporal(TemporalGateway):
    """A gateway to no Temporal that counts every attempt to reach it (a start, signal or lookup needs one)."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9")
        self.attempts = 0

    async def client(self) -> Client:
        self.attempts += 1
        raise TemporalUnavailableError("the fuzz has no Temporal")


@dataclass
class Service:
    """The webhook service under fuzz: its HTTP edge, its inbox and database, and the Temporal it never reaches."""

    http: httpx.AsyncClient
    inbox: WebhookInbox
    database: Database
    temporal: NoTemporal


@pytest.fixture
async def service(settings: Settings, database: Database) -> AsyncIterator[Service]:
    """The webhook app over ASGI in this loop, started as uvicorn starts it, on a fresh SQLite or PostgreSQL inbox."""
    temporal = NoTemporal()
    # No background relay: the test runs a pass itself once the fuzz is done.
    app = create_app(settings, temporal=temporal, database=database, relay=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhooks") as http,
    ):
        yield Service(http=http, inbox=app.state.inbox, database=database, temporal=temporal)


REQUIRED_ORDER_FIELDS = ["id", "created_at", "currency", "line_items", "shipping_address"]
WRONG_VALUES: st.SearchStrategy[Any] = st.sampled_from([None, [], {}, "", "not-a-value", -1.5, True])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def padded(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    frame = b'{"pad": ""}'
    return frame[:-2] + b"x" * (size - len(frame)) + frame[-2:]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bodies no route may act on: broken JSON, JSON of the wrong shape, orders missing or mistyping a field, huge."""
    kind = draw(st.sampled_from(["bytes", "json", "order", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "huge":
        return padded(MAX_BODY_BYTES + draw(st.integers(1, 1000)))
    order = shopify_order("9300000000001")
    field = draw(st.sampled_from(REQUIRED_ORDER_FIELDS))
    if draw(st.booleans()):
        del order[field]
    else:
        order[field] = draw(WRONG_VALUES)
    return json.dumps(order).encode()


def signed_headers(route: str, raw: bytes, settings: Settings, signing: str) -> dict[str, str]:
    """The headers a vendor would send, signed properly, with a wrong key, or not at all."""
    if route == "shopify":
        key = settings.shopify.client_secret.get_secret_value() if signing == "good" else "shpss_forged"
        headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Event-Id": hashlib.sha256(raw).hexdigest()}
        headers["X-Shopify-Hmac-Sha256"] = shopify_hmac(raw, key)
    elif route == "wms":
        secret = settings.wms.webhook_secret.get_secret_value() if signing == "good" else "whsec_Zm9yZ2Vk"
        msg_id, stamp = f"msg_{hashlib.sha256(raw).hexdigest()[:16]}", str(int(time.time()))
        digest = hmac.new(
            base64.b64decode(secret.removeprefix("whsec_")), f"{msg_id}.{stamp}.".encode() + raw, "sha256"
        )
        headers = {"x-webhook-topic": "order.shipped", "webhook-id": msg_id, "webhook-timestamp": stamp}
        headers["webhook-signature"] = "v1," + base64.b64encode(digest.digest()).decode()
    else:
        key = settings.carrier.webhook_secret.get_secret_value() if signing == "good" else "forged"
        headers = {"X-Hmac-Signature": signature_header(key, raw)}
    if signing == "missing":
        headers = {k: v for k, v in headers.items() if "signature" not in k.lower() and "hmac" not in k.lower()}
    return headers


async def stored_rows(database: Database) -> tuple[int, int]:
    """How many rows the inbox holds, and how many deliveries they count."""
    async with database.session() as session:
        count, deliveries = (await session.execute(select(func.count(), func.sum(InboxEvent.deliveries)))).one()
    return int(count), int(deliveries or 0)


async def test_bad_input_on_every_route_is_refused_with_a_reason_and_starts_nothing(
    service: Service, settings: Settings
) -> None:
    loop = asyncio.get_running_loop()

    def run(work: Coroutine[Any, Any, T]) -> T:
        # Hypothesis runs in a thread; the service, its database connections and this work stay in the loop.
        return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=60)

    refused: Counter[str] = Counter()
    seen: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()

    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        route=st.sampled_from(ROUTES),
        raw=bodies(),
        signing=st.sampled_from(["good", "good", "good", "forged", "missing"]),
        content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]),
    )
    # One of each kind of answer for certain, whatever hypothesis draws besides.
    @example(route="carrier", raw=b'{"description": "batch.created", "id": "evt_fuzz"}', signing="good",
             content_type="application/json")  # fmt: skip
    @example(route="shopify", raw=json.dumps({"id": "not-a-number"}).encode(), signing="good", content_type=None)
    @example(route="wms", raw=b"{}", signing="forged", content_type="application/json")
    @example(route="carrier", raw=padded(MAX_BODY_BYTES + 1), signing="missing", content_type="text/plain")
    def check(route: str, raw: bytes, signing: str, content_type: str | None) -> None:
        headers = signed_headers(route, raw, settings, signing)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = run(service.http.post(f"/webhooks/{route}", content=raw, headers=headers))
        answer: dict[str, Any] = response.json()

        assert response.status_code < 500, response.text
        assert service.temporal.attempts == 0
        if response.status_code in (401, 413):
            reason = "bad signature" if response.status_code == 401 else "body too large"
            refused[f"{route}: {reason}"] += 1
            outcomes[reason] += 1
            assert run(service.http.get("/healthz")).json()["refused"] == refused
            assert answer["detail"]
            assert INBOX_ID_HEADER not in response.headers
            return
        inbox_id = int(response.headers[INBOX_ID_HEADER])
        seen[inbox_id] += 1
        row = run(store.get(service.database, inbox_id))
        assert row is not None
        assert row.deliveries == seen[inbox_id]
        if seen[inbox_id] > 1:
            # The vendor's event id was seen before (the same body, or a carrier body's own `id`): a
            # redelivery, answered 200 and counted on the first row, whatever became of that one.
            assert response.status_code == 200, response.text
            outcomes["redelivery"] += 1
            return
        assert row.body == raw
        outcomes[row.status] += 1
        if response.status_code in (400, 422):
            assert row.status == InboxStatus.REJECTED, (row.status, row.last_error)
            assert row.errors and row.last_error and answer["detail"]
        else:
            # Authentic, but nothing for a saga to do: settled at once, with the reason on the row.
            assert response.status_code == 200, response.text
            assert row.status == InboxStatus.IGNORED, (row.status, row.last_error, row.outcome)
            assert row.outcome

    started = time.monotonic()
    await asyncio.to_thread(check)
    fuzzed = time.monotonic() - started

    # Nothing is left for the relay, and a pass of it does not reach for Temporal either.
    statuses = await store.count_by_status(service.database)
    assert set(statuses) <= {InboxStatus.REJECTED.value, InboxStatus.IGNORED.value}, statuses
    await Relay(service.inbox, grace=timedelta(0)).run_once()
    assert service.temporal.attempts == 0
    # Every authentic delivery is in the inbox: one row per event, each redelivery counted on it.
    assert await stored_rows(service.database) == (len(seen), seen.total())
    # The fuzz met every kind of answer, or it proved less than it claims.
    assert {"bad signature", "body too large", "rejected", "ignored"} <= set(outcomes), outcomes
    print(f"\n{service.database.url.split(':')[0]}: {EXAMPLES} examples in {fuzzed:.1f} s: {dict(outcomes)}")


@pytest.mark.parametrize("route", ROUTES)
async def test_the_body_size_limit_stores_a_body_at_it_and_refuses_one_past_it_however_it_is_sent(
    service: Service, settings: Settings, route: str
) -> None:
    at_limit, past_limit = padded(MAX_BODY_BYTES), padded(MAX_BODY_BYTES + 1)

    async def post(raw: bytes, *, streamed: bool = False) -> httpx.Response:
        headers = {"Content-Type": "application/json", **signed_headers(route, raw, settings, "good")}

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(raw), 64 * 1024):
                yield raw[start : start + 64 * 1024]

        # Streamed, the request declares no length: the limit must hold while the body is read.
        content: Any = chunks() if streamed else raw
        return await service.http.post(f"/webhooks/{route}", content=content, headers=headers)

    kept = await post(at_limit)
    declared = await post(past_limit)
    streamed = await post(past_limit, streamed=True)

    assert kept.status_code < 500 and kept.status_code != 413, kept.text
    row = await store.get(service.database, int(kept.headers[INBOX_ID_HEADER]))
    assert row is not None and row.body == at_limit
    for refused in (declared, streamed):
        assert refused.status_code == 413, refused.text
        assert str(MAX_BODY_BYTES) in refused.json()["detail"]
    assert await stored_rows(service.database) == (1, 1)
    assert (await service.http.get("/healthz")).json()["refused"] == {f"{route}: body too large": 2}
    assert service.temporal.attempts == 0
