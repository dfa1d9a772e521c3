"""Carrier webhooks over real HTTP: EasyPost Event deliveries, their signature, retries and replays."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from orderflow.adapters.carrier import CarrierClient, tracker_from_event, verify_webhook
from orderflow.canonical import TrackingStatus
from orderflow.sandbox.server import BackgroundServer
from orderflow.settings import SANDBOX_CARRIER_API_KEY, Settings

pytestmark = pytest.mark.integration

AUTH = (SANDBOX_CARRIER_API_KEY, "")
SECRET = "\ufb01-s\u00e9cret"  # a ligature and a composed accent: only the NFKD key verifies


class Receiver:
    """A webhook endpoint that records every delivery and fails the first few on purpose."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.failures_left = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hooks/{name}")
        async def hook(name: str, request: Request) -> Response:
            self.received.append((name, dict(request.headers), await request.body()))
            if name == "broken" or self.failures_left > 0:
                self.failures_left -= 1
                return Response(status_code=500)
            return Response(status_code=200)

        return app

    def bodies(self, name: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for hook, headers, body in self.received if hook == name]


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with BackgroundServer(receiver.app()) as server:
        yield receiver, server.url


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, str]) -> tuple[Receiver, str]:
    recorder, url = receiver_server
    recorder.received.clear()
    recorder.failures_left = 0
    return recorder, url


@pytest.fixture
def carrier(http: httpx.AsyncClient, settings: Settings) -> CarrierClient:
    return CarrierClient(http, settings.carrier)


async def wait_for(condition: Any, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out waiting for webhook deliveries")
        await asyncio.sleep(0.05)


async def create_webhook(settings: Settings, url: str, **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(auth=AUTH) as raw:
        response = await raw.post(f"{settings.carrier.base_url}/v2/webhooks", json={"webhook": {"url": url, **extra}})
    assert response.status_code == 201
    return response.json()


async def test_event_is_signed_with_the_nfkd_secret_and_retried_after_a_500(
    carrier: CarrierClient, settings: Settings, sandbox: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    recorder.failures_left = 1
    hook = await create_webhook(
        settings,
        f"{base}/hooks/main",
        webhook_secret=SECRET,
        custom_headers=[{"name": "X-Env", "value": "sandbox"}],
    )
    assert hook["object"] == "Webhook" and hook["disabled_at"] is None
    tracker = await carrier.create_tracker("EZ4000000004", "USPS")
    await wait_for(lambda: len(recorder.bodies("main")) >= 2)

    (first_headers, first_body), (second_headers, second_body) = recorder.bodies("main")[:2]
    assert first_body == second_body
    for headers, body in ((first_headers, first_body), (second_headers, second_body)):
        assert verify_webhook(body, headers["x-hmac-signature"], SECRET)
        assert not verify_webhook(body, headers["x-hmac-signature"], "wrong")
        assert headers["x-env"] == "sandbox"
    event = json.loads(second_body)
    assert event["object"] == "Event"
    assert event["description"] == "tracker.created"
    assert tracker_from_event(event).tracker_id == tracker.tracker_id

    deliveries = (await sandbox.get("/sandbox/webhooks/deliveries", params={"system": "carrier"})).json()
    [delivery] = [d for d in deliveries if d["event_id"] == event["id"]]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    async with httpx.AsyncClient(auth=AUTH) as raw:
        stored = (await raw.get(f"{settings.carrier.base_url}/v2/events/{event['id']}")).json()
    assert stored["completed_urls"] == [f"{base}/hooks/main"]
    assert stored["pending_urls"] == []
    assert stored["status"] == "completed"


async def test_default_subscription_is_signed_with_the_configured_secret(
    carrier: CarrierClient, settings: Settings, sandbox: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    response = await sandbox.post(
        "/sandbox/webhooks/subscriptions/carrier", json={"topics": ["tracker.updated"], "url": f"{base}/hooks/app"}
    )
    response.raise_for_status()
    tracker = await carrier.create_tracker("EZ4000000004")
    (await sandbox.post("/sandbox/clock/advance", json={"seconds": 1000})).raise_for_status()
    (await sandbox.post("/sandbox/tick")).raise_for_status()
    await wait_for(lambda: len(recorder.bodies("app")) >= 3)

    secret = settings.carrier.webhook_secret.get_secret_value()
    events = []
    for headers, body in recorder.bodies("app"):
        assert verify_webhook(body, headers["x-hmac-signature"], secret)
        events.append(json.loads(body))
    assert {e["description"] for e in events} == {"tracker.updated"}  # tracker.created was not subscribed
    last = max(events, key=lambda e: e["created_at"])
    assert last["previous_attributes"] == {"status": "out_for_delivery"}
    delivered = tracker_from_event(last)
    assert (delivered.tracker_id, delivered.status) == (tracker.tracker_id, TrackingStatus.DELIVERED)


async def test_resending_events_replays_the_newest_event_of_the_object(
    carrier: CarrierClient, settings: Settings, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    await create_webhook(settings, f"{base}/hooks/replay", webhook_secret=SECRET)
    tracker = await carrier.create_tracker("EZ3000000003")
    await wait_for(lambda: len(recorder.bodies("replay")) >= 1)
    async with httpx.AsyncClient(auth=AUTH) as raw:
        response = await raw.post(f"{settings.carrier.base_url}/v2/events", json={"result_id": tracker.tracker_id})
        listed = (await raw.get(f"{settings.carrier.base_url}/v2/events", params={"page_size": 1})).json()
    assert response.status_code == 200
    await wait_for(lambda: len(recorder.bodies("replay")) >= 2)
    original, replayed = recorder.bodies("replay")[:2]
    assert replayed[1] == original[1]
    assert json.loads(replayed[1])["id"] == response.json()["id"]
    assert [e["id"] for e in listed["events"]] == [response.json()["id"]]
    assert listed["has_more"] is False


async def test_a_webhook_that_keeps_failing_is_disabled_and_an_update_reenables_it(
    carrier: CarrierClient, settings: Settings, sandbox: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    recorder, base = receiver
    hook = await create_webhook(settings, f"{base}/hooks/broken", webhook_secret=SECRET)
    await carrier.create_tracker("EZ1000000001")
    url = f"{settings.carrier.base_url}/v2/webhooks/{hook['id']}"
    async with httpx.AsyncClient(auth=AUTH) as raw:
        for _ in range(40):  # each step moves past the next compressed retry of the ~24 h schedule
            (await sandbox.post("/sandbox/clock/advance", json={"seconds": 30})).raise_for_status()
            (await sandbox.post("/sandbox/tick")).raise_for_status()
            if (await raw.get(url)).json()["disabled_at"]:
                break
        disabled = (await raw.get(url)).json()
        assert disabled["disabled_at"] is not None
        assert len(recorder.bodies("broken")) == 10  # the first try plus nine retries
        enabled = (await raw.patch(url, json={"webhook": {"webhook_secret": "rotated"}})).json()
        assert enabled["disabled_at"] is None
        listed = (await raw.get(f"{settings.carrier.base_url}/v2/webhooks")).json()["webhooks"]
        assert [w["id"] for w in listed] == [hook["id"]]
        assert (await raw.delete(url)).status_code == 200
        gone = await raw.get(url)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "NOT_FOUND"
