"""The webhook inbox at the service's edge: store every authentic request before answering, then dispatch it.

The order of work is the guarantee: read (bounded) and verify, write the row, answer only after
the write. An unreachable database is a 503, so the vendor sends the webhook again; an unreachable
Temporal is a 200, because the row is safe and the relay dispatches it later.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from orderflow.metrics import WebhookMetrics
from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxEvent, InboxStatus
from orderflow.webhooks.dispatch import (
    Delivery,
    Dispatch,
    Rejection,
    Source,
    TemporalGateway,
    TemporalUnavailableError,
    WebhookReceipt,
    log,
)

# Far above any order or shipment a vendor sends, far below what could exhaust memory or the disk.
MAX_BODY_BYTES = 1024 * 1024
# Long enough for a restarting database, short against the vendors' own retry schedules.
RETRY_AFTER_SECONDS = 30
# Requests being read and stored at once before the service sheds load: at a few ms each, the last
# of them is still answered well within a vendor's timeout (Shopify's is 5 s).
MAX_IN_FLIGHT = 256
# Mapped dispatches kept in memory for the relay; beyond this (Temporal away for long) rows are mapped again.
MAPPED_KEPT = 10_000
OVERLOAD_RETRY_AFTER_SECONDS = 5
# Response header naming the inbox row, so a vendor's delivery log leads an operator to it.
INBOX_ID_HEADER = "Orderflow-Inbox-Id"
# Errors that mean the database cannot take the write now (down, locked, unmigrated, out of space).
STORAGE_ERRORS = (SQLAlchemyError, OSError)

SETTLED_BY_RECEIPT = {
    "started": InboxStatus.DISPATCHED,
    "signalled": InboxStatus.DISPATCHED,
    "duplicate": InboxStatus.DUPLICATE,
    "ignored": InboxStatus.IGNORED,
}


class BodyTooLargeError(Exception):
    """A request body over the inbox's limit."""


@dataclass(frozen=True)
class Answer:
    """What one dispatch of an inbox row came to, and the HTTP answer that says so."""

    status: InboxStatus
    status_code: int
    content: dict[str, Any]


async def bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it (or its declared length) passes the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def delivery_of(event: InboxEvent) -> Delivery:
    """The delivery an inbox row holds, as a source maps it."""
    return Delivery(
        inbox_id=event.id,
        source=event.source,
        topic=event.topic,
        event_id=event.event_id,
        headers=dict(event.headers),
        body=event.body,
        received_at=store.aware(event.received_at),
    )


@dataclass(frozen=True)
class Verdict:
    """What the edge made of a delivery before storing it: the row's status and, when settled, the answer."""

    status: InboxStatus
    # None while pending: the answer then names the row, known only after the write.
    answer_if_settled: Answer | None
    outcome: str | None = None
    errors: list[dict[str, Any]] | None = None
    error: str | None = None
    # The dispatch the edge mapped, kept for this process's relay so it need not map the body again.
    dispatch: Dispatch | None = None

    @property
    def answer(self) -> Answer:
        """The answer to a delivery the edge settled."""
        assert self.answer_if_settled is not None, "a pending delivery's answer names its row"
        return self.answer_if_settled


def receipt_answer(status: InboxStatus, receipt: WebhookReceipt) -> Answer:
    """A 200 carrying the receipt the vendor sees."""
    return Answer(status, 200, receipt.model_dump(mode="json"))


class WebhookInbox:
    """Stores verified webhooks and dispatches them: from a request, the relay, or an operator's replay."""

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        temporal: TemporalGateway,
        sources: Mapping[str, Source],
        max_body_bytes: int = MAX_BODY_BYTES,
        max_in_flight: int = MAX_IN_FLIGHT,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self.database = database
        # Requests by source, topic and outcome, for /metrics (a registry of this inbox's own by default).
        self.metrics = metrics if metrics is not None else WebhookMetrics()
        self.settings = settings
        self.temporal = temporal
        self.sources = dict(sources)
        self.max_body_bytes = max_body_bytes
        # Refusals never reach the inbox (they are not authentic, or too big to hold): counted here.
        self.refusals: Counter[str] = Counter()
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        # Set on each new pending row: wakes the relay to dispatch it now rather than on its next tick.
        self.arrivals = asyncio.Event()
        # Dispatches the edge already mapped, by inbox id, oldest first; a row not here is mapped again
        # from its stored bytes (another replica's, a replay, or one dropped past the bound).
        self.mapped: OrderedDict[int, Dispatch] = OrderedDict()

    def remember(self, inbox_id: int, dispatch: Dispatch) -> None:
        """Keep a mapped dispatch for the relay, dropping the oldest past `MAPPED_KEPT` (a long outage)."""
        self.mapped[inbox_id] = dispatch
        while len(self.mapped) > MAPPED_KEPT:
            self.mapped.popitem(last=False)

    def refuse(
        self, source: str, reason: str, status_code: int, detail: str, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        """Count and log a request the inbox will not store, and answer it."""
        self.refusals[f"{source}: {reason}"] += 1
        self.metrics.webhook_request(source, "", reason.replace(" ", "_"))
        log.warning("%s webhook refused (%s): %s", source, status_code, reason)
        return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)

    async def receive(self, request: Request, source: Source) -> Response:
        """Verify, map and store one webhook request, and answer once the row is written.

        The answer does not wait for Temporal: the relay dispatches the row right after (woken by
        `arrivals`), so a vendor's delivery never waits on a saga's start, and an outage changes nothing
        it sees. Past `max_in_flight` requests the service sheds load with a quick 503, which the vendor
        retries, instead of letting every request slow down together past the vendor's timeout.
        """
        if self.in_flight >= self.max_in_flight:
            return self.refuse(
                source.name,
                "overloaded",
                503,
                f"{self.in_flight} webhooks are being stored; retry later",
                headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_SECONDS)},
            )
        self.in_flight += 1
        try:
            return await self._receive(request, source)
        finally:
            self.in_flight -= 1

    async def _receive(self, request: Request, source: Source) -> Response:
        try:
            raw = await bounded_body(request, self.max_body_bytes)
        except BodyTooLargeError:
            return self.refuse(
                source.name, "body too large", 413, f"the body is larger than {self.max_body_bytes} bytes"
            )
        headers = {name.lower(): value for name, value in request.headers.items()}
        if (reason := source.verify(raw, headers, self.settings)) is not None:
            return self.refuse(source.name, "bad signature", 401, reason)

        topic, event_id = source.identify(raw, headers)
        delivery = Delivery(
            inbox_id=0,
            source=source.name,
            topic=topic[:255],
            event_id=event_id[:255],
            headers={k: v for k, v in headers.items() if k in source.kept_headers},
            body=raw,
            received_at=store.now(),
        )
        verdict = self.judge(delivery, source)
        try:
            received = await store.receive(
                self.database,
                source=delivery.source,
                event_id=delivery.event_id,
                topic=delivery.topic,
                headers=dict(delivery.headers),
                body=raw,
                received_at=delivery.received_at,
                status=verdict.status,
                outcome=verdict.outcome,
                errors=verdict.errors,
                error=verdict.error,
            )
        except STORAGE_ERRORS as exc:
            log.error("%s webhook %s not stored, answered 503: %s", source.name, event_id, exc.__class__.__name__)
            self.metrics.webhook_request(source.name, delivery.topic, "storage_unavailable")
            return JSONResponse(
                {"detail": f"the inbox cannot store the webhook ({exc.__class__.__name__}); retry later"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

        if received.redelivery:
            receipt = WebhookReceipt(
                status="duplicate",
                order_keys=received.workflow_id.split(",") if received.workflow_id else [],
                reason=f"{source.name} event {delivery.event_id} was already received "
                f"(inbox {received.id}, {received.status})",
            )
            answer = receipt_answer(received.status, receipt)
            self.metrics.webhook_request(source.name, delivery.topic, "duplicate")
        elif verdict.status is InboxStatus.PENDING:
            if verdict.dispatch is not None:
                self.remember(received.id, verdict.dispatch)
            self.arrivals.set()
            receipt = WebhookReceipt(
                status="accepted", reason=f"stored in the inbox as {received.id}; the relay dispatches it"
            )
            answer = receipt_answer(InboxStatus.PENDING, receipt)
            self.metrics.webhook_request(source.name, delivery.topic, "accepted")
        else:
            answer = verdict.answer
            self.metrics.webhook_request(source.name, delivery.topic, verdict.status.value)
        return JSONResponse(answer.content, status_code=answer.status_code, headers={INBOX_ID_HEADER: str(received.id)})

    def judge(self, delivery: Delivery, source: Source) -> Verdict:
        """Map a delivery at the edge: refused (400/422), nothing to do (200), or pending for the relay."""
        try:
            planned = source.plan(delivery, self.settings)
        except Rejection as rejected:
            log.warning("%s event %s rejected: %s", delivery.source, delivery.event_id, rejected.detail)
            return Verdict(
                InboxStatus.REJECTED,
                Answer(InboxStatus.REJECTED, rejected.status_code, {"detail": rejected.detail}),
                errors=rejected.errors,
                error=str(rejected.detail),
            )
        # A bug in a mapping: stored as failed for an operator to replay once it is fixed; the vendor
        # is told it is stored, since sending it again cannot help.
        except Exception as exc:
            log.exception("%s event %s failed to map", delivery.source, delivery.event_id)
            error = f"{exc.__class__.__name__}: {exc}"
            receipt = WebhookReceipt(status="failed", reason=f"stored in the inbox; {error}")
            return Verdict(InboxStatus.FAILED, receipt_answer(InboxStatus.FAILED, receipt), error=error)
        if isinstance(planned, WebhookReceipt):
            outcome = planned.status if planned.reason is None else f"{planned.status}: {planned.reason}"
            status = SETTLED_BY_RECEIPT[planned.status]
            return Verdict(status, receipt_answer(status, planned), outcome=outcome)
        return Verdict(InboxStatus.PENDING, None, dispatch=planned)

    async def dispatch(self, event: InboxEvent) -> Answer:
        """Map a stored delivery and start or signal its sagas, recording on the row what came of it."""
        answer, settlement = await self.attempt(event)
        await self.record([(event, settlement)])
        return answer

    async def attempt(self, event: InboxEvent) -> tuple[Answer, store.Settlement]:
        """Map a stored delivery and start or signal its sagas; what came of it, not yet recorded."""
        source = self.sources[event.source]
        try:
            mapped = self.mapped.pop(event.id, None)
            if mapped is not None:
                receipt = await mapped(self.temporal)
            else:
                receipt = await source.handle(delivery_of(event), self.settings, self.temporal)
        except Rejection as rejected:
            log.warning("%s event %s rejected (inbox %s): %s", event.source, event.event_id, event.id, rejected.detail)
            settled = store.Settlement(
                event.id, InboxStatus.REJECTED, errors=rejected.errors, error=str(rejected.detail)
            )
            return Answer(InboxStatus.REJECTED, rejected.status_code, {"detail": rejected.detail}), settled
        except TemporalUnavailableError as away:
            receipt = WebhookReceipt(
                status="pending", reason=f"stored in the inbox as {event.id}; dispatched once Temporal is back"
            )
            return receipt_answer(InboxStatus.PENDING, receipt), store.Settlement(
                event.id, InboxStatus.PENDING, error=away.reason
            )
        # Anything else (Temporal refusing a request, a bug in a mapping) is the operator's to replay;
        # the vendor is told it is stored, since sending it again cannot help.
        except Exception as exc:
            log.exception("%s event %s failed to dispatch (inbox %s)", event.source, event.event_id, event.id)
            error = f"{exc.__class__.__name__}: {exc}"
            receipt = WebhookReceipt(status="failed", reason=f"stored in the inbox as {event.id}; {error}")
            return receipt_answer(InboxStatus.FAILED, receipt), store.Settlement(
                event.id, InboxStatus.FAILED, error=error
            )

        status = SETTLED_BY_RECEIPT[receipt.status]
        outcome = receipt.status if receipt.reason is None else f"{receipt.status}: {receipt.reason}"
        settled = store.Settlement(event.id, status, outcome=outcome, workflow_id=",".join(receipt.order_keys) or None)
        return receipt_answer(status, receipt), settled

    async def record(self, attempts: list[tuple[InboxEvent, store.Settlement]]) -> None:
        """Write what dispatch attempts came to on their rows (and on the loaded rows), in one transaction."""
        try:
            await store.settle_all(self.database, [settlement for _, settlement in attempts])
        except STORAGE_ERRORS as exc:
            # The dispatches happened; the rows stay pending and the relay repeats them, which the
            # saga's workflow ID (starts) and the sagas' own checks (signals) make harmless.
            log.error("%d inbox rows dispatched but not recorded: %s", len(attempts), exc)
            return
        for event, settled in attempts:
            event.status = settled.status.value
            event.last_error = settled.error
            if settled.status is not InboxStatus.PENDING:
                event.outcome, event.workflow_id, event.errors = settled.outcome, settled.workflow_id, settled.errors


async def inbox_of(request: Request) -> WebhookInbox:
    """The inbox the webhook app was made with (async, so FastAPI runs it without a thread hop)."""
    webhook_inbox: WebhookInbox = request.app.state.inbox
    return webhook_inbox


InboxDep = Annotated[WebhookInbox, Depends(inbox_of)]
