"""The Amazon adapter's usage plans (a token bucket per operation) and its LWA token cache.

The HTTP side here is `httpx.MockTransport`: these are unit checks of the adapter's own timing and
caching decisions. The adapter against the sandbox over real HTTP is tests/integration/test_amazon_contract.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from orderflow.adapters.amazon import USAGE_PLANS, AmazonClient, TokenBucket, rate_limit_from_headers
from orderflow.adapters.errors import AuthenticationError, RateLimitedError
from orderflow.settings import AmazonSettings

BASE = "http://127.0.0.1:9/amazon"
LWA = f"{BASE}/auth/o2/token"


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings() -> AmazonSettings:
    return AmazonSettings(base_url=BASE, lwa_url=LWA, max_throttle_wait_seconds=0.5)


def search_answer(rate: str | None = "0.0056") -> httpx.Response:
    headers = {"x-amzn-RequestId": "req-1"}
    if rate is not None:
        headers["x-amzn-RateLimit-Limit"] = rate
    return httpx.Response(200, json={"orders": []}, headers=headers)


def lwa_answer(counter: Counter[str], expires_in: int = 3600) -> httpx.Response:
    counter["lwa"] += 1
    return httpx.Response(
        200, json={"access_token": f"Atza|token-{counter['lwa']}", "token_type": "bearer", "expires_in": expires_in}
    )


def transport(counter: Counter[str], answer: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/o2/token"):
            return lwa_answer(counter)
        counter[request.url.path] += 1
        return answer(request)

    return httpx.MockTransport(handle)


async def search(client: AmazonClient) -> None:
    await client.search_orders(updated_after=datetime.now(UTC) - timedelta(hours=1), marketplace_id="ATVPDKIKX0DER")


# ---------------------------------------------------------------------- the bucket


def test_a_bucket_allows_its_burst_then_one_request_per_refill_interval() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)

    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    # The next caller queues behind the one already waiting.
    assert bucket.wait_time() == pytest.approx(1.0)
    clock.now += 1.0
    assert bucket.wait_time() == pytest.approx(0.0)


def test_a_bucket_refills_at_most_to_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=2, clock=clock)
    bucket.take()
    clock.now += 3600

    assert bucket.tokens == 2


def test_the_rate_header_changes_how_fast_a_bucket_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0.5, burst=1, clock=clock)
    bucket.take()
    assert bucket.wait_time() == pytest.approx(2.0)

    bucket.set_rate(rate_limit_from_headers({"x-amzn-RateLimit-Limit": "4.0"}) or 0)

    assert bucket.wait_time() == pytest.approx(0.25)
    assert rate_limit_from_headers({}) is None
    assert rate_limit_from_headers({"x-amzn-RateLimit-Limit": "garbage"}) is None


def test_usage_plans_follow_amazons_documented_rates() -> None:
    assert USAGE_PLANS["searchOrders"] == (0.0056, 20)
    assert USAGE_PLANS["getOrder"] == (0.5, 30)
    assert USAGE_PLANS["confirmShipment"] == (2.0, 10)
    assert USAGE_PLANS["createRestrictedDataToken"] == (1.0, 10)
    assert USAGE_PLANS["patchListingsItem"] == (5.0, 5)


# ---------------------------------------------------------------------- the client's buckets


async def test_each_operation_spends_its_own_bucket() -> None:
    counter: Counter[str] = Counter()
    clock = FakeClock()
    async with httpx.AsyncClient(transport=transport(counter, lambda r: search_answer())) as http:
        client = AmazonClient(http, settings(), clock=clock)
        for _ in range(20):
            await search(client)

        # searchOrders's burst of 20 is spent; its next slot is ~180 s away, far beyond the wait allowed.
        with pytest.raises(RateLimitedError) as caught:
            await search(client)

    assert caught.value.retry_after == pytest.approx(1 / 0.0056, rel=0.01)
    assert counter["/amazon/orders/2026-01-01/orders"] == 20  # the refused call never went out
    assert client.rate_limits.bucket("getOrder").tokens == 30


async def test_the_bucket_follows_the_rate_amazon_reports() -> None:
    counter: Counter[str] = Counter()
    clock = FakeClock()
    async with httpx.AsyncClient(transport=transport(counter, lambda r: search_answer(rate="50"))) as http:
        client = AmazonClient(http, settings(), clock=clock)
        for _ in range(20):
            await search(client)
        # At 50 rps the next slot is 20 ms away: waited out inside the call, not raised.
        await search(client)

    assert client.rate_limits.bucket("searchOrders").rate == 50
    assert counter["/amazon/orders/2026-01-01/orders"] == 21


async def test_a_short_quota_exceeded_is_waited_out_and_retried() -> None:
    counter: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        if counter[request.url.path] == 1:
            return httpx.Response(
                429,
                json={
                    "errors": [
                        {"code": "QuotaExceeded", "message": "You exceeded your quota for the requested resource."}
                    ]
                },
                headers={"Retry-After": "0.05", "x-amzn-RequestId": "req-2"},
            )
        return search_answer()

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        client = AmazonClient(http, settings())
        await search(client)

    assert counter["/amazon/orders/2026-01-01/orders"] == 2


async def test_a_lasting_quota_exceeded_goes_back_to_temporal_with_the_wait() -> None:
    counter: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, json={"errors": [{"code": "QuotaExceeded", "message": "quota"}]}, headers={"Retry-After": "30"}
        )

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        client = AmazonClient(http, settings())
        with pytest.raises(RateLimitedError) as caught:
            await search(client)

    assert caught.value.retryable
    assert caught.value.retry_after == 30
    assert caught.value.vendor_code == "QuotaExceeded"
    assert counter["/amazon/orders/2026-01-01/orders"] == 1


async def test_a_429_without_retry_after_backs_off_from_the_operations_rate() -> None:
    counter: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"errors": [{"code": "QuotaExceeded", "message": "quota"}]})

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        client = AmazonClient(http, settings())
        with pytest.raises(RateLimitedError) as caught:
            await client.update_availability("WRAP-500", 3)

    # patchListingsItem refills at 5 rps: never less than 0.2 s, jittered up to twice that.
    assert caught.value.retry_after is not None
    assert 0.2 <= caught.value.retry_after <= 0.4 * 2**3


# ---------------------------------------------------------------------- LWA tokens


async def test_the_access_token_is_exchanged_once_and_reused_until_near_expiry() -> None:
    counter: Counter[str] = Counter()
    clock = FakeClock()
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-amz-access-token"])
        return search_answer(rate="100")

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        client = AmazonClient(http, settings(), clock=clock)
        await search(client)
        clock.now += 3000
        await search(client)
        clock.now += 541  # 3541 s: inside the last minute of the hour, so refreshed early
        await search(client)

    assert counter["lwa"] == 2
    assert seen == ["Atza|token-1", "Atza|token-1", "Atza|token-2"]


async def test_concurrent_calls_share_one_token_exchange() -> None:
    counter: Counter[str] = Counter()

    async def slow_lwa(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth/o2/token"):
            await asyncio.sleep(0.05)
            return lwa_answer(counter)
        return httpx.Response(200, json={"orders": []})

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_lwa)) as http:
        client = AmazonClient(http, settings())
        tokens = await asyncio.gather(*(client.access_token() for _ in range(10)))

    assert counter["lwa"] == 1
    assert set(tokens) == {"Atza|token-1"}


async def test_the_exchange_sends_the_refresh_token_grant() -> None:
    forms: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        forms.append(request.content)
        return httpx.Response(200, json={"access_token": "Atza|x", "expires_in": 3600})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        await AmazonClient(http, settings()).access_token()

    (form,) = forms
    assert b"grant_type=refresh_token" in form
    assert b"refresh_token=Atzr%7Csandbox-refresh-token" in form
    assert b"client_id=amzn1.application-oa2-client.sandbox0000000000" in form


async def test_a_refused_refresh_token_is_an_authentication_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_grant", "error_description": "The refresh token is invalid"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(AuthenticationError, match="refresh token is invalid"):
            await AmazonClient(http, settings()).access_token()


def test_sandbox_secrets_are_refused_for_a_real_lwa_host() -> None:
    with pytest.raises(ValueError, match=r"refresh_token|client_secret"):
        AmazonSettings(base_url=BASE, lwa_url="https://api.amazon.com/auth/o2/token")
    with pytest.raises(ValueError, match="sandbox"):
        AmazonSettings(base_url="https://sellingpartnerapi-na.amazon.com", lwa_url=LWA)


async def test_a_token_amazon_stops_accepting_is_exchanged_again_once() -> None:
    counter: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["x-amz-access-token"] == "Atza|token-1":
            return httpx.Response(
                403, json={"errors": [{"code": "Unauthorized", "message": "Access to requested resource is denied."}]}
            )
        return search_answer(rate="100")

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        await search(AmazonClient(http, settings()))

    assert counter["lwa"] == 2
    assert counter["/amazon/orders/2026-01-01/orders"] == 2


async def test_a_call_refused_with_a_fresh_token_is_an_authentication_error() -> None:
    counter: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"errors": [{"code": "Unauthorized", "message": "denied"}]})

    async with httpx.AsyncClient(transport=transport(counter, answer)) as http:
        with pytest.raises(AuthenticationError):
            await search(AmazonClient(http, settings()))

    assert counter["lwa"] == 2  # one retry with a new token, not a loop
