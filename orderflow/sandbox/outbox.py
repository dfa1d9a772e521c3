"""The webhook outbox: what the simulated systems send to their subscribers, and when.

Each simulator emits events here with its own signer, so the bytes and headers a subscriber gets
are the vendor's. Deliveries are retried on a non-2xx answer or a timeout, on the vendor's schedule
compressed by `time_scale`, and every attempt is recorded so a test (or a person) can see what
was sent, replay it, or have duplicates and reordering injected on purpose.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from orderflow.sandbox.clock import SimClock


class DeliveryStatus(StrEnum):
    """Where a webhook delivery is in its life."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the last retry


class Subscription(BaseModel):
    """A subscriber's URL for some topics of one system, with the secret deliveries are signed with."""

    model_config = ConfigDict(extra="forbid")

    id: str
    system: str
    topics: list[str]
    url: str
    secret: str | None = None
    active: bool = True
    deleted: bool = False
    consecutive_failures: int = 0
    extra: dict[str, Any] = {}

    def wants(self, topic: str) -> bool:
        """Whether this subscription receives a topic (`*` receives all)."""
        return self.active and not self.deleted and ("*" in self.topics or topic in self.topics)


class Attempt(BaseModel):
    """One try at delivering a webhook."""

    at: datetime
    status_code: int | None = None
    error: str | None = None


class Delivery(BaseModel):
    """One event on its way to one subscriber."""

    id: str
    system: str
    topic: str
    event_id: str
    subscription_id: str
    url: str
    body: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    created_at: datetime
    next_attempt_at: datetime
    attempts: list[Attempt] = []
    duplicate_of: str | None = None
    headers_sent: dict[str, str] = {}


class OutboxChaos(BaseModel):
    """Misbehaviour to inject into one system's deliveries."""

    model_config = ConfigDict(extra="forbid")

    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    reorder_window_seconds: float = Field(default=0.0, ge=0)


# A signer turns (subscription, delivery, raw body, attempt time) into the vendor's headers.
Signer = Callable[[Subscription, Delivery, bytes, datetime], dict[str, str]]

# What a system does when a subscription runs out of retries, e.g. Shopify deletes it.
OnExhausted = Callable[[Subscription], None]


class SystemWebhookPolicy(BaseModel):
    """How one vendor delivers: its retry schedule (real seconds), its timeout, what exhaustion does."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retry_schedule: list[float]
    timeout_seconds: float = 5.0
    delete_subscription_when_exhausted: bool = False
    disable_subscription_when_exhausted: bool = False


class WebhookOutbox:
    """Holds subscriptions and deliveries for every simulated system, and pumps due deliveries."""

    def __init__(self, clock: SimClock, *, time_scale: float = 0.002, seed: int = 11) -> None:
        self.clock = clock
        self.time_scale = time_scale
        self.policies: dict[str, SystemWebhookPolicy] = {}
        self.signers: dict[str, Signer] = {}
        self.chaos: dict[str, OutboxChaos] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.deliveries: dict[str, Delivery] = {}
        self._ids = itertools.count(1)
        self._random = random.Random(seed)
        self._seed = seed

    def register_system(self, system: str, policy: SystemWebhookPolicy, signer: Signer) -> None:
        """Declare how a system's webhooks are retried and signed."""
        self.policies[system] = policy
        self.signers[system] = signer
        self.chaos.setdefault(system, OutboxChaos())

    def reset(self) -> None:
        """Forget every subscription and delivery."""
        self.subscriptions.clear()
        self.deliveries.clear()
        self.chaos = {system: OutboxChaos() for system in self.policies}
        self._random = random.Random(self._seed)

    def subscribe(
        self,
        system: str,
        topics: list[str],
        url: str,
        *,
        secret: str | None = None,
        subscription_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Subscription:
        """Add a subscriber for some topics of a system."""
        if system not in self.policies:
            raise KeyError(f"no webhooks for system {system!r}")
        sid = subscription_id or f"{system}-sub-{next(self._ids)}"
        sub = Subscription(id=sid, system=system, topics=topics, url=url, secret=secret, extra=extra or {})
        self.subscriptions[sid] = sub
        return sub

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscriber; pending deliveries to it are dropped."""
        removed = self.subscriptions.pop(subscription_id, None)
        for delivery in self.deliveries.values():
            if delivery.subscription_id == subscription_id and delivery.status is DeliveryStatus.PENDING:
                delivery.status = DeliveryStatus.FAILED
        return removed is not None

    def subscriptions_of(self, system: str) -> list[Subscription]:
        """A system's subscriptions, deleted ones included."""
        return [s for s in self.subscriptions.values() if s.system == system]

    def emit(self, system: str, topic: str, payload: Any, *, event_id: str) -> list[Delivery]:
        """Queue an event for every subscriber of its topic; returns the deliveries created."""
        body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), default=str)
        now = self.clock.now()
        chaos = self.chaos.get(system, OutboxChaos())
        created: list[Delivery] = []
        for sub in self.subscriptions_of(system):
            if not sub.wants(topic):
                continue
            delay = self._random.uniform(0, chaos.reorder_window_seconds) if chaos.reorder_window_seconds else 0
            delivery = Delivery(
                id=f"dlv-{next(self._ids)}",
                system=system,
                topic=topic,
                event_id=event_id,
                subscription_id=sub.id,
                url=sub.url,
                body=body,
                created_at=now,
                next_attempt_at=now + timedelta(seconds=delay),
            )
            self.deliveries[delivery.id] = delivery
            created.append(delivery)
            if chaos.duplicate_rate and self._random.random() < chaos.duplicate_rate:
                created.append(self._duplicate(delivery, chaos))
        return created

    def _duplicate(self, original: Delivery, chaos: OutboxChaos) -> Delivery:
        delay = self._random.uniform(0, max(chaos.reorder_window_seconds, 0.05))
        copy = original.model_copy(
            update={
                "id": f"dlv-{next(self._ids)}",
                "duplicate_of": original.id,
                "next_attempt_at": original.next_attempt_at + timedelta(seconds=delay),
                "attempts": [],
            }
        )
        self.deliveries[copy.id] = copy
        return copy

    def replay(self, delivery_id: str) -> Delivery:
        """Send a delivery again, as a new delivery of the same event (same event id)."""
        original = self.deliveries[delivery_id]
        now = self.clock.now()
        copy = original.model_copy(
            update={
                "id": f"dlv-{next(self._ids)}",
                "status": DeliveryStatus.PENDING,
                "created_at": now,
                "next_attempt_at": now,
                "attempts": [],
                "duplicate_of": original.id,
            }
        )
        self.deliveries[copy.id] = copy
        return copy

    def due(self) -> list[Delivery]:
        """Pending deliveries whose time has come, oldest first."""
        now = self.clock.now()
        ready = [d for d in self.deliveries.values() if d.status is DeliveryStatus.PENDING and d.next_attempt_at <= now]
        return sorted(ready, key=lambda d: d.next_attempt_at)

    async def pump(self, http: httpx.AsyncClient) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        attempted = 0
        for delivery in self.due():
            await self._attempt(http, delivery)
            attempted += 1
        return attempted

    async def _attempt(self, http: httpx.AsyncClient, delivery: Delivery) -> None:
        sub = self.subscriptions.get(delivery.subscription_id)
        policy = self.policies[delivery.system]
        if sub is None or sub.deleted or not sub.active:
            delivery.status = DeliveryStatus.FAILED
            return
        now = self.clock.now()
        raw = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            **self.signers[delivery.system](sub, delivery, raw, now),
        }
        delivery.headers_sent = headers
        attempt = Attempt(at=now)
        try:
            response = await http.post(delivery.url, content=raw, headers=headers, timeout=policy.timeout_seconds)
            attempt.status_code = response.status_code
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
            ok = False
        delivery.attempts.append(attempt)
        if ok:
            delivery.status = DeliveryStatus.DELIVERED
            sub.consecutive_failures = 0
            return
        retries_done = len(delivery.attempts) - 1
        if retries_done < len(policy.retry_schedule):
            wait = policy.retry_schedule[retries_done] * self.time_scale
            delivery.next_attempt_at = self.clock.now() + timedelta(seconds=wait)
            return
        delivery.status = DeliveryStatus.FAILED
        sub.consecutive_failures += 1
        if policy.delete_subscription_when_exhausted:
            sub.deleted = True
        elif policy.disable_subscription_when_exhausted:
            sub.active = False

    def describe(self, system: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Deliveries for the control API, newest last."""
        rows = [
            d
            for d in self.deliveries.values()
            if (system is None or d.system == system) and (status is None or d.status == status)
        ]
        return [d.model_dump(mode="json") for d in rows]
