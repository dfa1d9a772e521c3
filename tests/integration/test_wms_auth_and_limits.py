"""The WMS adapter's handling of ShipBob's token, channel header and 150-per-minute limit, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from contracts.wms_sandbox import fulfillment_request, plentiful_skus, vendor_client
from pydantic import SecretStr

from orderflow.adapters.errors import AuthenticationError, PermanentError, RateLimitedError, ValidationRejectedError
from orderflow.adapters.wms import WmsClient
from orderflow.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_wrong_token_is_an_authentication_error(http: httpx.AsyncClient, settings: Settings) -> None:
    wms = WmsClient(http, settings.wms.model_copy(update={"token": SecretStr("not-the-pat")}))

    with pytest.raises(AuthenticationError) as caught:
        await wms.get_stock()

    assert caught.value.status_code == 401
    assert not caught.value.retryable


async def test_a_write_without_the_channel_header_is_refused_with_a_field_error(
    settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    (sku,) = plentiful_skus(1)
    body = {
        "reference_id": "R-1",
        "type": "DTC",
        "shipping_method": "Standard",
        "recipient": {"name": "A", "address": {"address1": "1 Main", "city": "Austin", "country": "US"}},
        "products": [{"reference_id": sku, "name": sku, "quantity": 1}],
    }
    async with vendor_client(settings, channel=False) as vendor:
        response = await vendor.post("/order", json=body)

    assert response.status_code == 400
    assert "shipbob_channel_id" in response.json()["errors"]
    assert (await sandbox.get("/sandbox/state/wms")).json()["orders"] == []


async def test_a_wrong_channel_is_a_permanent_error(http: httpx.AsyncClient, settings: Settings) -> None:
    wms = WmsClient(http, settings.wms.model_copy(update={"channel_id": 4242}))
    (sku,) = plentiful_skus(1)

    with pytest.raises(ValidationRejectedError) as caught:
        await wms.create_order(fulfillment_request("order:shopify:2001", [(sku, 1)]))

    assert isinstance(caught.value, PermanentError)
    assert "shipbob_channel_id" in caught.value.details


async def test_a_short_injected_throttle_is_waited_out_inside_the_call(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "wms", "path": "/2026-01/inventory-level/*", "kind": "throttle", "times": 2, "retry_after": 0.1}
    await sandbox.post("/sandbox/faults", json=rule)
    wms = WmsClient(http, settings.wms)

    levels = await wms.get_stock()

    assert len(levels) == 120
    (fired,) = (await sandbox.get("/sandbox/faults")).json()
    assert fired["fired"] == 2


async def test_a_long_injected_throttle_goes_back_to_the_caller_with_its_delay(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    rule = {"system": "wms", "path": "/2026-01/inventory-level/*", "kind": "throttle", "times": 1, "retry_after": 25}
    await sandbox.post("/sandbox/faults", json=rule)
    wms = WmsClient(http, settings.wms)

    with pytest.raises(RateLimitedError) as caught:
        await wms.get_stock()

    assert caught.value.retry_after == 25
    assert caught.value.vendor_code == "429"
    assert "Rate limit is exceeded" in caught.value.message
    assert len(await wms.get_stock()) == 120  # the rule fired once; the next call goes through


async def test_exhausting_the_sliding_window_throttles_until_it_slides(
    http: httpx.AsyncClient, settings: Settings, sandbox: httpx.AsyncClient
) -> None:
    async with vendor_client(settings) as vendor:
        response = await vendor.put("/simulate/rate-limit", json={"requests_per_minute": 3})
        assert response.status_code == 200
        remaining = [
            (await vendor.get("/inventory-level/9001/locations")).headers["x-remaining-calls"] for _ in range(3)
        ]
        throttled = await vendor.get("/inventory-level/9001/locations")
    assert remaining == ["2", "1", "0"]
    assert throttled.status_code == 429
    assert throttled.json() == {
        "statusCode": 429,
        "message": f"Rate limit is exceeded. Try again in {throttled.headers['x-retry-after']} seconds.",
    }
    assert throttled.headers["x-remaining-calls"] == "0"

    wms = WmsClient(http, settings.wms)
    with pytest.raises(RateLimitedError) as caught:
        await wms.get_stock(["BOLT-M8-S"])
    assert caught.value.retry_after is not None and 55 <= caught.value.retry_after <= 60

    await sandbox.post("/sandbox/clock/advance", json={"seconds": 61})
    assert [lv.sku for lv in await wms.get_stock(["BOLT-M8-S"])] == ["BOLT-M8-S", "BOLT-M8-S"]


async def test_every_answer_says_how_many_calls_are_left(settings: Settings) -> None:
    async with vendor_client(settings) as vendor:
        found = await vendor.get("/inventory-level/9001/locations")
        missing = await vendor.get("/order/1")

    assert found.headers["x-remaining-calls"] == "149"
    assert missing.status_code == 404
    assert missing.headers["x-remaining-calls"] == "148"
