"""The webhook inbox: every authentic delivery, kept as received, with what became of it.

A row is written before the vendor is answered, so an outage after the write loses nothing. The
vendor's event id is unique per source: a redelivery is counted on the first row (`deliveries`),
never stored twice, so the sum of `deliveries` is the number of authentic requests received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.store.db import Base, Database
from orderflow.telemetry import current_traceparent


class InboxStatus(StrEnum):
    """Where a delivery stands: waiting to be dispatched, or why it needs nothing more."""

    PENDING = "pending"
    DISPATCHED = "dispatched"
    # The saga it would start already exists (the same order under a new event id).
    DUPLICATE = "duplicate"
    REJECTED = "rejected"
    IGNORED = "ignored"
    FAILED = "failed"


class InboxEvent(Base):
    """One authentic webhook delivery (and the count of its redeliveries)."""

    __tablename__ = "inbox_event"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255))
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    last_delivered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Comma-separated when one delivery signalled several sagas (a carrier event for a shared number).
    workflow_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The W3C trace context of the request that stored the row: the relay's dispatch, however late
    # and on whichever replica, continues the order's trace from it. Null while tracing is off.
    traceparent: Mapped[str | None] = mapped_column(String(128), nullable=True)


@dataclass(frozen=True)
class Received:
    """What storing a delivery found: its row's id and standing, and whether this request was a redelivery."""

    id: int
    redelivery: bool
    status: InboxStatus
    # The sagas the row was dispatched to (comma-separated), for a redelivery's answer.
    workflow_id: str | None


def now() -> datetime:
    """The current time, as the inbox stores it."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A stored time with its zone (SQLite hands them back naive, though they were written in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_TABLE: Table = InboxEvent.__table__  # type: ignore[assignment]
# The hot path's one statement per webhook, built once per dialect so SQLAlchemy reuses its
# compiled form: receiving is most of the webhook service's work under a flash sale.
_RECEIVE_STATEMENTS: dict[str, Any] = {}


def _receive_statement(dialect: str) -> Any:
    statement = _RECEIVE_STATEMENTS.get(dialect)
    if statement is None:
        insert = postgresql.insert(_TABLE) if dialect == "postgresql" else sqlite.insert(_TABLE)
        # An upsert, not "insert, else update": one round trip, and concurrent deliveries of one
        # event still race safely on the unique key. A redelivery only counts itself on the row.
        statement = insert.on_conflict_do_update(
            index_elements=["source", "event_id"],
            set_={"deliveries": _TABLE.c.deliveries + 1, "last_delivered_at": insert.excluded.last_delivered_at},
        ).returning(_TABLE.c.id, _TABLE.c.deliveries, _TABLE.c.status, _TABLE.c.workflow_id)
        _RECEIVE_STATEMENTS[dialect] = statement
    return statement


async def receive(
    database: Database,
    *,
    source: str,
    event_id: str,
    topic: str,
    headers: dict[str, str],
    body: bytes,
    received_at: datetime | None = None,
    status: InboxStatus = InboxStatus.PENDING,
    outcome: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    error: str | None = None,
    traceparent: str | None = None,
) -> Received:
    """Store a delivery (pending, or already settled when the edge decided it), or count a redelivery on its row.

    The row keeps `traceparent`, by default the trace of the request being answered (a redelivery
    keeps the first delivery's).
    """
    at = received_at or now()
    settled = status is not InboxStatus.PENDING
    values = {
        "source": source,
        "event_id": event_id,
        "topic": topic,
        "headers": headers,
        "body": body,
        "received_at": at,
        "status": status.value,
        "deliveries": 1,
        "last_delivered_at": at,
        "attempts": 0,
        "last_attempt_at": None,
        "last_error": error,
        "errors": errors,
        "outcome": outcome,
        "workflow_id": None,
        "settled_at": at if settled else None,
        "traceparent": traceparent or current_traceparent(),
    }
    async with database.engine.begin() as connection:
        row = (await connection.execute(_receive_statement(connection.dialect.name), values)).one()
    return Received(
        id=row.id, redelivery=row.deliveries > 1, status=InboxStatus(row.status), workflow_id=row.workflow_id
    )


async def claim(database: Database, event: InboxEvent) -> bool:
    """Take the next dispatch attempt of a row; False when another dispatcher took it first."""
    async with database.session() as session:
        result = await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == event.id, InboxEvent.attempts == event.attempts)
            .values(attempts=InboxEvent.attempts + 1, last_attempt_at=now())
        )
        claimed = result.rowcount == 1  # type: ignore[attr-defined]
    if claimed:
        event.attempts += 1
    return claimed


def _takeable(attempted_before: datetime) -> Any:
    # Pending, and no dispatch under way: never attempted, or attempted by a dispatcher that has had
    # longer than any dispatch takes (it crashed, or its replica went away) to settle it.
    return (InboxEvent.status == InboxStatus.PENDING.value) & (
        InboxEvent.last_attempt_at.is_(None) | (InboxEvent.last_attempt_at < attempted_before)
    )


async def claim_pending(database: Database, *, attempted_before: datetime, limit: int = 100) -> list[InboxEvent]:
    """Take the next dispatch attempt of up to `limit` pending rows, oldest first, in one statement.

    Concurrent relays (replicas) never take the same row: the condition is checked again on the
    row being updated (PostgreSQL re-reads a row another transaction changed; SQLite has one writer).
    """
    oldest = (
        select(InboxEvent.id)
        .where(_takeable(attempted_before))
        .order_by(InboxEvent.received_at, InboxEvent.id)
        .limit(limit)
        # PostgreSQL: rows another relay is claiming are skipped, not waited for, so concurrent relays
        # take the next rows instead of none. (SQLite has one writer at a time and ignores this.)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(InboxEvent)
        .where(InboxEvent.id.in_(oldest), _takeable(attempted_before))
        .values(attempts=InboxEvent.attempts + 1, last_attempt_at=now())
        .returning(InboxEvent)
        .execution_options(synchronize_session=False)
    )
    async with database.session() as session:
        rows = list((await session.execute(statement)).scalars().all())
    return sorted(rows, key=lambda row: (aware(row.received_at), row.id))


async def release(database: Database, event_ids: Sequence[int]) -> None:
    """Give back attempts taken but not made (the relay stopped early), so the next pass takes them at once."""
    if not event_ids:
        return
    async with database.session() as session:
        await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id.in_(event_ids), InboxEvent.status == InboxStatus.PENDING.value)
            .values(attempts=InboxEvent.attempts - 1, last_attempt_at=None)
        )


@dataclass(frozen=True)
class Settlement:
    """What one dispatch attempt came to, to be recorded on its row."""

    event_id: int
    status: InboxStatus
    outcome: str | None = None
    workflow_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    error: str | None = None


_SETTLE_PENDING = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    # The attempt is over: the row is free for the next relay pass at once, not after a grace.
    .values(status=bindparam("b_status"), last_error=bindparam("b_error"), last_attempt_at=None)
)
_SETTLE_DONE = (
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        outcome=bindparam("b_outcome"),
        workflow_id=bindparam("b_workflow_id"),
        errors=bindparam("b_errors", type_=_TABLE.c.errors.type),
        settled_at=bindparam("b_at"),
    )
)


async def settle_all(database: Database, settlements: Sequence[Settlement]) -> None:
    """Record what a pass of dispatch attempts did, in one transaction (one write for a whole burst)."""
    at = now()
    pending = [
        {"b_id": s.event_id, "b_status": s.status.value, "b_error": s.error}
        for s in settlements
        if s.status is InboxStatus.PENDING
    ]
    done = [
        {
            "b_id": s.event_id,
            "b_status": s.status.value,
            "b_error": s.error,
            "b_outcome": s.outcome,
            "b_workflow_id": s.workflow_id,
            "b_errors": s.errors,
            "b_at": at,
        }
        for s in settlements
        if s.status is not InboxStatus.PENDING
    ]
    if not settlements:
        return
    async with database.engine.begin() as connection:
        if pending:
            await connection.execute(_SETTLE_PENDING, pending)
        if done:
            await connection.execute(_SETTLE_DONE, done)


async def settle(
    database: Database,
    event_id: int,
    *,
    status: InboxStatus,
    outcome: str | None = None,
    workflow_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    error: str | None = None,
) -> None:
    """Record what a dispatch attempt did with a row: its status, outcome, workflow and errors."""
    await settle_all(database, [Settlement(event_id, status, outcome, workflow_id, errors, error)])


async def get(database: Database, event_id: int) -> InboxEvent | None:
    """One inbox row by its id."""
    async with database.session() as session:
        return await session.get(InboxEvent, event_id)


async def listing(
    database: Database, *, status: InboxStatus | None = None, source: str | None = None, limit: int = 50
) -> Sequence[InboxEvent]:
    """The newest rows first, optionally of one status and source."""
    query = select(InboxEvent).order_by(InboxEvent.received_at.desc(), InboxEvent.id.desc()).limit(limit)
    if status is not None:
        query = query.where(InboxEvent.status == status.value)
    if source is not None:
        query = query.where(InboxEvent.source == source)
    async with database.session() as session:
        return (await session.execute(query)).scalars().all()


async def count_by_status(database: Database) -> dict[str, int]:
    """How many rows stand in each status."""
    async with database.session() as session:
        rows = await session.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status))
        return {str(status): int(count) for status, count in rows}
