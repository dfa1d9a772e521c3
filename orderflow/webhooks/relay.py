"""The relay: dispatch the inbox's pending deliveries to Temporal, in the order they arrived.

Every new delivery is dispatched by the relay: the webhook answers as soon as its row is written,
and sets `WebhookInbox.arrivals`, which wakes the relay at once. While Temporal is away the relay
backs off and the rows wait, in order, on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.trace import SpanKind, Status, StatusCode

from orderflow import telemetry
from orderflow.store import inbox as store
from orderflow.store.inbox import InboxEvent, InboxStatus
from orderflow.webhooks.dispatch import log
from orderflow.webhooks.inbox import STORAGE_ERRORS, Answer, WebhookInbox

# A dispatch takes at most a connect (4 s) plus a call (`CALL_DEADLINE`, 5 s). A row attempted longer
# ago than this and still pending was abandoned (its replica died mid-dispatch): another relay may take it.
GRACE = timedelta(seconds=15)
# Starts in flight at once: enough to keep Temporal's frontend busy, few enough that a flash sale's
# dispatches leave the event loop to the webhooks being answered.
CONCURRENCY = 16


@dataclass(frozen=True)
class RelayPass:
    """What one pass over the pending rows did."""

    dispatched: int
    # True when Temporal was still away: the pass stopped there, to keep the arrival order.
    temporal_away: bool


class Relay:
    """Dispatches pending inbox rows as they arrive, with backoff while Temporal is away; a task of the service."""

    def __init__(
        self,
        inbox: WebhookInbox,
        *,
        interval: float = 1.0,
        max_backoff: float = 60.0,
        grace: timedelta = GRACE,
        batch: int = 100,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self.inbox = inbox
        self.interval = interval
        self.max_backoff = max_backoff
        self.grace = grace
        self.batch = batch
        self.concurrency = concurrency

    async def run_once(self) -> RelayPass:
        """One pass: take up to a batch of pending rows, oldest first, and dispatch them in arrival order.

        Consecutive rows of one source and topic (a burst of new orders) are dispatched together,
        up to `concurrency` at once; a row of another topic (a cancellation after the order's
        creation) waits for every row before it. The pass stops at the first group that finds
        Temporal away, and gives back the rows it did not try.
        """
        database = self.inbox.database
        rows = await store.claim_pending(database, attempted_before=store.now() - self.grace, limit=self.batch)
        dispatched = 0
        groups = [list(group) for _, group in itertools.groupby(rows, key=lambda row: (row.source, row.topic))]
        for index, group in enumerate(groups):
            answers = await self._dispatch_together(group)
            if any(answer.status is InboxStatus.PENDING for answer in answers):
                untried = [row.id for later in groups[index + 1 :] for row in later]
                await store.release(database, untried)
                return RelayPass(dispatched=dispatched, temporal_away=True)
            dispatched += len(group)
        return RelayPass(dispatched=dispatched, temporal_away=False)

    async def _dispatch_together(self, rows: list[InboxEvent]) -> list[Answer]:
        # The first row goes alone: if it finds Temporal away, the rest are given back untried
        # rather than each failing in turn.
        first = await self.attempt(rows[0])
        if first[0].status is InboxStatus.PENDING:
            await self.inbox.record([(rows[0], first[1])])
            await store.release(self.inbox.database, [row.id for row in rows[1:]])
            return [first[0]]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(row: InboxEvent) -> tuple[Answer, store.Settlement]:
            async with gate:
                return await self.attempt(row)

        attempts = [first, *await asyncio.gather(*(one(row) for row in rows[1:]))]
        # One write for the whole group: per-row writes would hold the database (and, on SQLite,
        # its one write lock) against the webhooks being stored meanwhile.
        await self.inbox.record([(row, settled) for row, (_, settled) in zip(rows, attempts, strict=True)])
        return [answer for answer, _ in attempts]

    async def attempt(self, row: InboxEvent) -> tuple[Answer, store.Settlement]:
        """Dispatch one row, traced as a continuation of the webhook request that stored it."""
        waited = store.now() - store.aware(row.received_at)
        attributes = {
            "orderflow.inbox.id": row.id,
            "orderflow.inbox.source": row.source,
            "orderflow.inbox.topic": row.topic,
            "orderflow.inbox.attempt": row.attempts,
            # How late the dispatch is: long after an outage, a few ms normally.
            "orderflow.inbox.waited_ms": int(waited.total_seconds() * 1000),
        }
        with telemetry.continued_span(
            f"inbox dispatch {row.source} {row.topic}",
            traceparent=row.traceparent,
            attributes=attributes,
            kind=SpanKind.CONSUMER,
        ) as span:
            answer, settled = await self.inbox.attempt(row)
            if span.is_recording():
                # The order's attributes are already on it: the gateway names the saga it starts or signals.
                span.set_attribute("orderflow.inbox.status", settled.status.value)
                if settled.status is InboxStatus.FAILED:
                    span.set_status(Status(StatusCode.ERROR, settled.error))
        return answer, settled

    async def run(self) -> None:
        """Pass after pass until cancelled: at once on arrivals, backing off while Temporal or the database is away."""
        failures = 0
        arrivals = self.inbox.arrivals
        while True:
            arrivals.clear()
            dispatched = 0
            try:
                outcome = await self.run_once()
                away, dispatched = outcome.temporal_away, outcome.dispatched
                if dispatched:
                    log.debug("relay dispatched %d pending webhooks", dispatched)
            except STORAGE_ERRORS as exc:
                log.warning("relay cannot read the inbox: %s", exc.__class__.__name__)
                away = True
            failures = failures + 1 if away else 0
            if failures:
                # Arrivals do not cut a backoff short: each would be one more doomed dispatch.
                await asyncio.sleep(min(self.interval * 2**failures, self.max_backoff))
            elif dispatched < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrivals.wait(), timeout=self.interval)
            # A full batch means a backlog: the next pass starts at once.
