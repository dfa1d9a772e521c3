"""The relay: dispatch the inbox's pending deliveries, in the order they arrived, once Temporal is back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from orderflow.store import inbox as store
from orderflow.store.inbox import InboxStatus
from orderflow.webhooks.dispatch import log
from orderflow.webhooks.inbox import STORAGE_ERRORS, WebhookInbox

# A receiving request dispatches its own row; the relay waits this long after that attempt, so
# the two never race (a dispatch takes at most a connect plus an RPC, 4 s each).
GRACE = timedelta(seconds=15)


@dataclass(frozen=True)
class RelayPass:
    """What one pass over the pending rows did."""

    dispatched: int
    # True when Temporal was still away: the pass stopped there, to keep the arrival order.
    temporal_away: bool


class Relay:
    """Dispatches pending inbox rows with backoff while Temporal is away; a background task of the service."""

    def __init__(
        self,
        inbox: WebhookInbox,
        *,
        interval: float = 1.0,
        max_backoff: float = 60.0,
        grace: timedelta = GRACE,
        batch: int = 100,
    ) -> None:
        self.inbox = inbox
        self.interval = interval
        self.max_backoff = max_backoff
        self.grace = grace
        self.batch = batch

    async def run_once(self) -> RelayPass:
        """One pass: dispatch pending rows oldest first, stopping at the first that finds Temporal away."""
        database = self.inbox.database
        rows = await store.pending(database, attempted_before=store.now() - self.grace, limit=self.batch)
        dispatched = 0
        for row in rows:
            # Another relay (a second replica) may have taken this attempt: then it is theirs.
            if not await store.claim(database, row):
                continue
            answer = await self.inbox.dispatch(row)
            if answer.status is InboxStatus.PENDING:
                return RelayPass(dispatched=dispatched, temporal_away=True)
            dispatched += 1
        return RelayPass(dispatched=dispatched, temporal_away=False)

    async def run(self) -> None:
        """Pass after pass until cancelled, backing off exponentially while Temporal or the database is away."""
        failures = 0
        while True:
            try:
                outcome = await self.run_once()
                away = outcome.temporal_away
                if outcome.dispatched:
                    log.info("relay dispatched %d pending webhooks", outcome.dispatched)
            except STORAGE_ERRORS as exc:
                log.warning("relay cannot read the inbox: %s", exc.__class__.__name__)
                away = True
            failures = failures + 1 if away else 0
            if not away and outcome.dispatched >= self.batch:
                continue  # a backlog: keep draining it
            await asyncio.sleep(min(self.interval * 2**failures, self.max_backoff) if failures else self.interval)
