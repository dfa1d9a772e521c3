"""Bad input on every webhook route: never a 5xx, never a saga, every refusal stored or counted with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from orderflow.canonical import Order
from orderflow.canonical.base import CanonicalModel
from orderflow.sandbox.carrier import signature_header
from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database, upgrade
from orderflow.store.inbox import InboxStatus
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import StartOutcome, TemporalGateway
from orderflow.webhooks.inbox import INBOX_ID_HEADER, MAX_BODY_BYTES

from .conftest import shopify_hmac, shopify_order


class RecordingGateway(TemporalGateway):
    """A Temporal gateway that only records what it was asked to start or signal."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:9")
        self.calls: list[str] = []

    async def start_order(self, order: Order, *, received_at_epoch_ms: int) -> StartOutcome:
        self.calls.append(f"start {order.key}")
        return StartOutcome.STARTED

    async def signal_order(self, order_key: str, signal: str, payload: CanonicalModel) -> bool:
        self.calls.append(f"signal {signal} {order_key}")
        return True

    async def sagas_tracking(self, tracking_number: str) -> list[str]:
        return []


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, RecordingGateway, Database]]:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    upgrade(url)
    database, gateway = Database(url), RecordingGateway()
    with TestClient(create_app(settings, temporal=gateway, database=database, relay=False)) as client:
        yield client, gateway, database


REQUIRED_ORDER_FIELDS = ["id", "created_at", "currency", "line_items", "shipping_address"]
WRONG_VALUES: st.SearchStrategy[Any] = st.sampled_from([None, [], {}, "", "not-a-value", -1.5, True])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bodies no route may act on: broken JSON, JSON of the wrong shape, orders missing or mistyping a field, huge."""
    kind = draw(st.sampled_from(["bytes", "json", "order", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "huge":
        return b'{"pad": "' + b"x" * (MAX_BODY_BYTES + draw(st.integers(0, 1000))) + b'"}'
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


def test_bad_input_on_every_route_is_refused_with_a_reason_and_starts_nothing(
    service: tuple[TestClient, RecordingGateway, Database], settings: Settings
) -> None:
    client, gateway, database = service
    counted: dict[str, int] = {}

    @hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        route=st.sampled_from(["shopify", "wms", "carrier"]),
        raw=bodies(),
        signing=st.sampled_from(["good", "good", "good", "forged", "missing"]),
        content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", None]),
    )
    def check(route: str, raw: bytes, signing: str, content_type: str | None) -> None:
        headers = signed_headers(route, raw, settings, signing)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = client.post(f"/webhooks/{route}", content=raw, headers=headers)
        detail: Any = response.json().get("detail") or response.json().get("reason")

        assert response.status_code < 500, response.text
        assert gateway.calls == []
        if response.status_code in (401, 413):
            reason = "bad signature" if response.status_code == 401 else "body too large"
            counted[f"{route}: {reason}"] = counted.get(f"{route}: {reason}", 0) + 1
            assert client.get("/healthz").json()["refused"] == counted
            assert detail
            return
        row = client.portal.call(store.get, database, int(response.headers[INBOX_ID_HEADER]))  # type: ignore[union-attr]
        assert row is not None
        if response.status_code == 200 and response.json()["status"] == "duplicate":
            # The vendor's event id was seen before (a carrier body's own `id`): counted on that row.
            assert row.deliveries >= 2 and response.json()["reason"]
            return
        assert row.body == raw
        if response.status_code in (400, 422):
            assert row.status == InboxStatus.REJECTED and row.errors and row.last_error and detail
        else:
            assert response.status_code == 200
            assert response.json()["status"] == "ignored", response.text
            assert row.status == InboxStatus.IGNORED
            assert response.json()["reason"]

    check()
