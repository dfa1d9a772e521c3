"""The service as a whole: it answers health checks, and 503 (so vendors retry) while Temporal is away."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from orderflow.settings import Settings
from orderflow.webhooks.app import create_app
from orderflow.webhooks.dispatch import TemporalGateway

from .conftest import shopify_hmac, shopify_order

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def cut_off(settings: Settings) -> httpx.AsyncClient:
    """The webhook app pointed at a Temporal that is not there."""
    app = create_app(settings, temporal=TemporalGateway(f"127.0.0.1:{closed_port()}", task_queue="nowhere"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhooks")


async def test_an_authentic_order_gets_503_with_the_reason_while_temporal_is_unreachable(
    cut_off: httpx.AsyncClient, settings: Settings
) -> None:
    raw = json.dumps(shopify_order("9000000000001")).encode()
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": shopify_hmac(raw, settings.shopify.client_secret.get_secret_value()),
    }

    async with cut_off:
        response = await cut_off.post("/webhooks/shopify", content=raw, headers=headers)
        health = await cut_off.get("/healthz")

    assert response.status_code == 503
    assert "cannot connect to Temporal" in response.json()["detail"]
    assert response.headers["Retry-After"] == "30"
    # Liveness does not depend on Temporal: the service is up and says it has not reached it.
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "temporal": "not connected yet"}


async def test_verification_still_comes_first_while_temporal_is_unreachable(cut_off: httpx.AsyncClient) -> None:
    async with cut_off:
        response = await cut_off.post("/webhooks/shopify", content=b"{}", headers={"X-Shopify-Topic": "orders/create"})

    assert response.status_code == 401
