"""The sandbox's shared machinery over real HTTP: faults, lost responses, the clock and webhook delivery.

A minimal simulator (a ledger that records writes) stands in for a vendor here, so these tests
pin the machinery itself; each vendor's simulator has its own contract tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response

from orderflow.sandbox import SandboxConfig, Simulator, create_app
from orderflow.sandbox.core import SandboxContext
from orderflow.sandbox.faults import FaultKind, FaultRule
from orderflow.sandbox.outbox import Delivery, Subscription, SystemWebhookPolicy
from orderflow.sandbox.server import BackgroundServer


class LedgerSimulator(Simulator):
    """Records every posted entry and emits a signed `entry.created` webhook for it."""

    name = "ledger"

    def __init__(self, ctx: SandboxContext) -> None:
        super().__init__(ctx)
        self.entries: list[dict[str, Any]] = []
        ctx.outbox.register_system(
            "ledger", SystemWebhookPolicy(retry_schedule=[10, 20, 40], timeout_seconds=2), self.sign
        )

    def sign(self, sub: Subscription, delivery: Delivery, body: bytes, at: datetime) -> dict[str, str]:
        digest = hmac.new((sub.secret or "").encode(), body, hashlib.sha256).digest()
        return {"X-Ledger-Signature": base64.b64encode(digest).decode(), "X-Ledger-Event": delivery.event_id}

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/entries", status_code=201)
        async def post_entry(entry: dict[str, Any]) -> dict[str, Any]:
            self.entries.append(entry)
            self.ctx.outbox.emit("ledger", "entry.created", entry, event_id=f"evt-{len(self.entries)}")
            return {"id": len(self.entries)}

        @router.get("/entries")
        async def list_entries() -> list[dict[str, Any]]:
            return self.entries

        return router

    def reset(self) -> None:
        self.entries = []

    def snapshot(self) -> dict[str, Any]:
        return {"entries": self.entries}

    def fault_response(self, kind: FaultKind, rule: FaultRule) -> tuple[int, dict[str, str], bytes]:
        status = 429 if kind is FaultKind.THROTTLE else rule.status
        return status, {"Retry-After": str(rule.retry_after)}, json.dumps({"fault": kind.value}).encode()


@pytest.fixture
def ledger_sandbox() -> Iterator[str]:
    config = SandboxConfig(webhook_time_scale=0.001, tick_seconds=0.02)
    app = create_app(config, simulators=lambda ctx: [LedgerSimulator(ctx)])
    with BackgroundServer(app) as server:
        yield server.url


class Receiver:
    """A webhook endpoint that fails its first `failures` deliveries, then records the rest."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.failures > 0:
                self.failures -= 1
                return Response(status_code=500)
            self.received.append((dict(request.headers), body))
            return Response(status_code=200)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_timeout_after_commit_applies_the_change_and_loses_the_response(ledger_sandbox: str) -> None:
    rule = {"system": "ledger", "kind": "timeout_after_commit", "hold_seconds": 1.0, "times": 1}
    httpx.post(f"{ledger_sandbox}/sandbox/faults", json=rule).raise_for_status()

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "A"}, timeout=0.3)

    # The caller saw a timeout, yet the entry is there: exactly the case idempotency keys exist for.
    assert httpx.get(f"{ledger_sandbox}/ledger/entries").json() == [{"sku": "A"}]


def test_a_patient_client_gets_a_504_after_the_hold(ledger_sandbox: str) -> None:
    rule = {"system": "ledger", "kind": "timeout_after_commit", "hold_seconds": 0.1, "times": 1}
    httpx.post(f"{ledger_sandbox}/sandbox/faults", json=rule).raise_for_status()
    response = httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "B"}, timeout=5)
    assert response.status_code == 504
    assert len(httpx.get(f"{ledger_sandbox}/ledger/entries").json()) == 1


def test_an_error_fault_refuses_before_any_change(ledger_sandbox: str) -> None:
    rule = {"system": "ledger", "kind": "error", "status": 503, "times": 1}
    httpx.post(f"{ledger_sandbox}/sandbox/faults", json=rule).raise_for_status()
    assert httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "C"}).status_code == 503
    assert httpx.get(f"{ledger_sandbox}/ledger/entries").json() == []
    assert httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "C"}).status_code == 201


def test_a_throttle_fault_answers_in_the_systems_shape(ledger_sandbox: str) -> None:
    rule = {"system": "ledger", "kind": "throttle", "retry_after": 3, "times": 1}
    httpx.post(f"{ledger_sandbox}/sandbox/faults", json=rule).raise_for_status()
    response = httpx.get(f"{ledger_sandbox}/ledger/entries")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3.0"


def test_the_control_api_rejects_a_malformed_rule_with_a_reason(ledger_sandbox: str) -> None:
    response = httpx.post(f"{ledger_sandbox}/sandbox/faults", json={"kind": "error", "rate": 2})
    assert response.status_code == 422
    assert "rate" in response.text
    response = httpx.post(f"{ledger_sandbox}/sandbox/faults", json={"kind": "error", "system": "nowhere"})
    assert response.status_code == 404


def test_webhooks_are_signed_retried_with_the_same_event_id_and_recorded(ledger_sandbox: str) -> None:
    receiver = Receiver(failures=1)
    with BackgroundServer(receiver.app) as hook_server:
        httpx.post(
            f"{ledger_sandbox}/sandbox/webhooks/subscriptions/ledger",
            json={"topics": ["entry.created"], "url": f"{hook_server.url}/hook"},
        ).raise_for_status()
        httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "D"}).raise_for_status()
        wait_for(lambda: len(receiver.received) == 1)

    headers, body = receiver.received[0]
    assert json.loads(body) == {"sku": "D"}
    assert headers["x-ledger-event"] == "evt-1"
    deliveries = httpx.get(f"{ledger_sandbox}/sandbox/webhooks/deliveries", params={"system": "ledger"}).json()
    assert [d["status"] for d in deliveries] == ["delivered"]
    assert [a["status_code"] for a in deliveries[0]["attempts"]] == [500, 200]


def test_deliveries_give_up_after_the_schedule_and_can_be_replayed(ledger_sandbox: str) -> None:
    receiver = Receiver(failures=4)  # one try plus three retries, all refused
    with BackgroundServer(receiver.app) as hook_server:
        httpx.post(
            f"{ledger_sandbox}/sandbox/webhooks/subscriptions/ledger",
            json={"topics": ["*"], "url": f"{hook_server.url}/hook"},
        ).raise_for_status()
        httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "E"}).raise_for_status()
        deliveries_url = f"{ledger_sandbox}/sandbox/webhooks/deliveries"
        wait_for(lambda: httpx.get(deliveries_url).json()[0]["status"] == "failed")
        failed = httpx.get(deliveries_url).json()[0]
        assert len(failed["attempts"]) == 4

        replay = httpx.post(f"{deliveries_url}/{failed['id']}/replay").json()
        assert replay["event_id"] == failed["event_id"]
        wait_for(lambda: len(receiver.received) == 1)


def test_injected_duplicates_carry_the_same_event_id(ledger_sandbox: str) -> None:
    receiver = Receiver()
    with BackgroundServer(receiver.app) as hook_server:
        httpx.post(
            f"{ledger_sandbox}/sandbox/webhooks/subscriptions/ledger",
            json={"topics": ["*"], "url": f"{hook_server.url}/hook"},
        ).raise_for_status()
        httpx.put(f"{ledger_sandbox}/sandbox/webhooks/chaos/ledger", json={"duplicate_rate": 1.0}).raise_for_status()
        httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "F"}).raise_for_status()
        wait_for(lambda: len(receiver.received) == 2)
    assert {h["x-ledger-event"] for h, _ in receiver.received} == {"evt-1"}


def test_the_clock_moves_forward_only(ledger_sandbox: str) -> None:
    before = httpx.get(f"{ledger_sandbox}/sandbox/clock").json()
    after = httpx.post(f"{ledger_sandbox}/sandbox/clock/advance", json={"seconds": 3600}).json()
    assert after["offset_seconds"] == before["offset_seconds"] + 3600
    assert httpx.post(f"{ledger_sandbox}/sandbox/clock/advance", json={"seconds": -1}).status_code == 422


def test_reset_clears_state_and_faults(ledger_sandbox: str) -> None:
    httpx.post(f"{ledger_sandbox}/ledger/entries", json={"sku": "G"}).raise_for_status()
    httpx.post(f"{ledger_sandbox}/sandbox/faults", json={"kind": "error"}).raise_for_status()
    httpx.post(f"{ledger_sandbox}/sandbox/reset").raise_for_status()
    assert httpx.get(f"{ledger_sandbox}/sandbox/state/ledger").json() == {"entries": []}
    assert httpx.get(f"{ledger_sandbox}/sandbox/faults").json() == []
