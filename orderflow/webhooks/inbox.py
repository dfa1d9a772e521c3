"""The webhook inbox at the service's edge: store every authentic request before answering, then dispatch it.

The order of work is the guarantee: read (bounded) and verify, write the row, answer only after
the write. An unreachable database is a 503, so the vendor sends the webhook again; an unreachable
Temporal is a 200, because the row is safe and the relay dispatches it later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from orderflow.settings import Settings
from orderflow.store import inbox as store
from orderflow.store.db import Database
from orderflow.store.inbox import InboxEvent, InboxStatus
from orderflow.webhooks.dispatch import (
    Delivery,
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
    ) -> None:
        self.database = database
        self.settings = settings
        self.temporal = temporal
        self.sources = dict(sources)
        self.max_body_bytes = max_body_bytes
        # Refusals never reach the inbox (they are not authentic, or too big to hold): counted here.
        self.refusals: Counter[str] = Counter()

    def refuse(self, source: str, reason: str, status_code: int, detail: str) -> JSONResponse:
        """Count and log a request the inbox will not store, and answer it."""
        self.refusals[f"{source}: {reason}"] += 1
        log.warning("%s webhook refused (%s): %s", source, status_code, reason)
        return JSONResponse({"detail": detail}, status_code=status_code)

    async def receive(self, request: Request, source: Source) -> Response:
        """Verify, store, then dispatch one webhook request; the answer comes only after the row is written."""
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
        try:
            received = await store.receive(
                self.database,
                source=source.name,
                event_id=event_id[:255],
                topic=topic[:255],
                headers={k: v for k, v in headers.items() if k in source.kept_headers},
                body=raw,
            )
        except STORAGE_ERRORS as exc:
            log.error("%s webhook %s not stored, answered 503: %s", source.name, event_id, exc.__class__.__name__)
            return JSONResponse(
                {"detail": f"the inbox cannot store the webhook ({exc.__class__.__name__}); retry later"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

        event = received.event
        if received.redelivery:
            receipt = WebhookReceipt(
                status="duplicate",
                order_keys=event.workflow_id.split(",") if event.workflow_id else [],
                reason=f"{source.name} event {event.event_id} was already received (inbox {event.id}, {event.status})",
            )
            answer = receipt_answer(InboxStatus(event.status), receipt)
        else:
            answer = await self.dispatch(event)
        return JSONResponse(answer.content, status_code=answer.status_code, headers={INBOX_ID_HEADER: str(event.id)})

    async def dispatch(self, event: InboxEvent) -> Answer:
        """Map a stored delivery and start or signal its sagas, recording on the row what came of it."""
        source = self.sources[event.source]
        delivery = delivery_of(event)
        try:
            receipt = await source.handle(delivery, self.settings, self.temporal)
        except Rejection as rejected:
            log.warning("%s event %s rejected (inbox %s): %s", event.source, event.event_id, event.id, rejected.detail)
            await self._settle(event, InboxStatus.REJECTED, errors=rejected.errors, error=str(rejected.detail))
            return Answer(InboxStatus.REJECTED, rejected.status_code, {"detail": rejected.detail})
        except TemporalUnavailableError as away:
            await self._settle(event, InboxStatus.PENDING, error=away.reason)
            receipt = WebhookReceipt(
                status="pending", reason=f"stored in the inbox as {event.id}; dispatched once Temporal is back"
            )
            return receipt_answer(InboxStatus.PENDING, receipt)
        # Anything else (Temporal refusing a request, a bug in a mapping) is the operator's to replay;
        # the vendor is told it is stored, since sending it again cannot help.
        except Exception as exc:
            log.exception("%s event %s failed to dispatch (inbox %s)", event.source, event.event_id, event.id)
            error = f"{exc.__class__.__name__}: {exc}"
            await self._settle(event, InboxStatus.FAILED, error=error)
            receipt = WebhookReceipt(status="failed", reason=f"stored in the inbox as {event.id}; {error}")
            return receipt_answer(InboxStatus.FAILED, receipt)

        status = SETTLED_BY_RECEIPT[receipt.status]
        outcome = receipt.status if receipt.reason is None else f"{receipt.status}: {receipt.reason}"
        await self._settle(event, status, outcome=outcome, workflow_id=",".join(receipt.order_keys) or None)
        return receipt_answer(status, receipt)

    async def _settle(
        self,
        event: InboxEvent,
        status: InboxStatus,
        *,
        outcome: str | None = None,
        workflow_id: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        try:
            await store.settle(
                self.database,
                event.id,
                status=status,
                outcome=outcome,
                workflow_id=workflow_id,
                errors=errors,
                error=error,
            )
        except STORAGE_ERRORS as exc:
            # The dispatch happened; the row stays pending and the relay repeats it, which the
            # saga's workflow ID (starts) and the sagas' own checks (signals) make harmless.
            log.error("inbox %s dispatched as %s but not recorded: %s", event.id, status.value, exc)
            return
        event.status = status.value
        event.outcome, event.workflow_id, event.errors, event.last_error = outcome, workflow_id, errors, error


def inbox_of(request: Request) -> WebhookInbox:
    """The inbox the webhook app was made with."""
    webhook_inbox: WebhookInbox = request.app.state.inbox
    return webhook_inbox


InboxDep = Annotated[WebhookInbox, Depends(inbox_of)]
