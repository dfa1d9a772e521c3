"""Fault injection: make any route of any simulated system fail the way real systems fail.

Rules are switched at run time over HTTP (`/sandbox/faults`) or with `orderflow sandbox faults`.
Each rule matches requests by system, method, path glob and, for GraphQL, operation, and fires
with a probability. The kinds are the failures adapters must survive:

- `error`: an HTTP error (5xx by default) in the vendor's own error shape, before any change;
- `throttle`: the vendor's rate-limit answer, with its headers;
- `latency`: a delay before the request is handled;
- `timeout_after_commit`: the change is applied, then the response is lost. The sandbox holds it
  for `hold_seconds`, so a client with a shorter timeout sees a read timeout, and a patient one
  finally gets a 504. Either way the caller cannot know the change landed, which is the case
  idempotency keys exist for.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import random
from collections.abc import Awaitable, Callable, MutableMapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class FaultKind(StrEnum):
    """The kinds of failure the sandbox can inject."""

    ERROR = "error"
    THROTTLE = "throttle"
    LATENCY = "latency"
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"


class FaultRule(BaseModel):
    """One switch: which requests it matches, what it does to them, how often."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    system: str = Field(default="*", description="shopify, netsuite, wms, carrier, or * for all")
    method: str = Field(default="*", description="HTTP method, or *")
    path: str = Field(default="*", description="Glob over the path below the system prefix")
    operation: str | None = Field(default=None, description="GraphQL: substring of the operation")
    mutating_only: bool = Field(
        default=False, description="Only writes: not reads, GraphQL queries, or the system's read-only POSTs"
    )
    kind: FaultKind
    rate: float = Field(default=1.0, ge=0, le=1)
    times: int | None = Field(default=None, ge=1, description="Fire at most this many times")
    status: int = Field(default=503, ge=400, le=599)
    latency_ms: int = Field(default=500, ge=0)
    hold_seconds: float = Field(default=10.0, ge=0)
    retry_after: float = Field(default=2.0, ge=0)
    fired: int = 0


class FaultDecision(BaseModel):
    """What the injector decided for one request."""

    latency_ms: int = 0
    rule: FaultRule | None = None


# Each simulator answers a fault in its vendor's shape: (kind, rule) -> (status, headers, body).
FaultResponder = Callable[[FaultKind, FaultRule], tuple[int, dict[str, str], bytes]]


def is_mutation(method: str, body: bytes) -> bool:
    """A write: any non-GET request, except a GraphQL POST whose document is a query."""
    if method.upper() in {"GET", "HEAD", "OPTIONS"}:
        return False
    if body[:1] == b"{":
        try:
            document = json.loads(body).get("query")
        except (ValueError, AttributeError):
            return True
        if isinstance(document, str):
            return document.lstrip().startswith("mutation")
    return True


class FaultInjector:
    """The rule book, and the seeded dice that decide whether a rule fires."""

    def __init__(self, seed: int = 7) -> None:
        # Per system, globs of POST routes that change nothing (queries, token grants): a
        # `mutating_only` rule must not hit them, or "lost writes" would also lose reads.
        self.read_only_posts: dict[str, tuple[str, ...]] = {}
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        self._random = random.Random(seed)
        self._seed = seed

    @property
    def rules(self) -> list[FaultRule]:
        """The rules in force, in the order they are checked."""
        return list(self._rules)

    def add(self, rule: FaultRule) -> FaultRule:
        """Put a rule in force; it is checked after the ones already there."""
        stored = rule.model_copy(update={"id": rule.id or f"fault-{next(self._ids)}", "fired": 0})
        self._rules.append(stored)
        return stored

    def remove(self, rule_id: str) -> bool:
        """Take one rule out of force."""
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        return len(self._rules) < before

    def clear(self, system: str | None = None) -> None:
        """Take every rule (of one system, or all) out of force, and reseed the dice."""
        self._rules = [r for r in self._rules if system is not None and r.system not in (system, "*")]
        if system is None:
            self._random = random.Random(self._seed)

    def decide(self, system: str, method: str, path: str, body: bytes) -> FaultDecision:
        """Which rules fire for this request: latencies add up, the first other kind wins."""
        decision = FaultDecision()
        for index, rule in enumerate(self._rules):
            if not self._matches(rule, system, method, path, body):
                continue
            if rule.times is not None and rule.fired >= rule.times:
                continue
            if rule.rate < 1 and self._random.random() >= rule.rate:
                continue
            fired = rule.model_copy(update={"fired": rule.fired + 1})
            self._rules[index] = fired
            if rule.kind is FaultKind.LATENCY:
                decision.latency_ms += rule.latency_ms
            elif decision.rule is None:
                decision.rule = fired
        return decision

    def _is_write(self, system: str, method: str, path: str, body: bytes) -> bool:
        read_only = self.read_only_posts.get(system, ())
        return is_mutation(method, body) and not any(fnmatch.fnmatchcase(path, glob) for glob in read_only)

    def _matches(self, rule: FaultRule, system: str, method: str, path: str, body: bytes) -> bool:
        if rule.system not in ("*", system):
            return False
        if rule.method not in ("*", method.upper()):
            return False
        if rule.path != "*" and not fnmatch.fnmatchcase(path, rule.path):
            return False
        if rule.mutating_only and not self._is_write(system, method, path, body):
            return False
        return not (rule.operation and rule.operation.encode() not in body)


class FaultMiddleware:
    """ASGI middleware that applies the injector's rules to requests under each system's prefix."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        injector: FaultInjector,
        responders: dict[str, FaultResponder],
    ) -> None:
        self.app = app
        self.injector = injector
        self.responders = responders

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        system, _, rest = path.lstrip("/").partition("/")
        responder = self.responders.get(system)
        if responder is None:
            await self.app(scope, receive, send)
            return

        # Read the whole body once so rules can look at it, then hand it on unchanged.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        decision = self.injector.decide(system, scope["method"], "/" + rest, body)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        rule = decision.rule
        if rule is None:
            await self.app(scope, replay, send)
            return
        if rule.kind is FaultKind.TIMEOUT_AFTER_COMMIT:
            # Let the handler apply the change, then swallow its answer.
            async def discard(_message: Message) -> None:
                return None

            await self.app(scope, replay, discard)
            await asyncio.sleep(rule.hold_seconds)
            status, headers, payload = responder(FaultKind.ERROR, rule.model_copy(update={"status": 504}))
        else:
            status, headers, payload = responder(rule.kind, rule)
        await _send_response(send, status, headers, payload)


async def _send_response(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if not any(k == b"content-type" for k, _ in raw_headers):
        raw_headers.append((b"content-type", b"application/json"))
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
