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
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.store.db import Base, Database


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


@dataclass(frozen=True)
class Received:
    """What storing a delivery found: the row, and whether this request was a redelivery of it."""

    event: InboxEvent
    redelivery: bool


def now() -> datetime:
    """The current time, as the inbox stores it."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A stored time with its zone (SQLite hands them back naive, though they were written in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _insert(session: AsyncSession) -> Any:
    # ON CONFLICT DO NOTHING makes concurrent deliveries of one event race safely on the unique key.
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(InboxEvent)


async def receive(
    database: Database,
    *,
    source: str,
    event_id: str,
    topic: str,
    headers: dict[str, str],
    body: bytes,
    received_at: datetime | None = None,
) -> Received:
    """Store a delivery as pending, or count it on the row already holding its event id."""
    at = received_at or now()
    async with database.session() as session:
        inserted = await session.execute(
            _insert(session)
            .values(
                source=source,
                event_id=event_id,
                topic=topic,
                headers=headers,
                body=body,
                received_at=at,
                status=InboxStatus.PENDING.value,
                deliveries=1,
                last_delivered_at=at,
                # The receiving request dispatches right after this write: that is the first attempt.
                attempts=1,
                last_attempt_at=at,
            )
            .on_conflict_do_nothing(index_elements=["source", "event_id"])
            .returning(InboxEvent.id)
        )
        new_id = inserted.scalar_one_or_none()
        if new_id is None:
            await session.execute(
                update(InboxEvent)
                .where(InboxEvent.source == source, InboxEvent.event_id == event_id)
                .values(deliveries=InboxEvent.deliveries + 1, last_delivered_at=at)
            )
        row = (
            await session.execute(
                select(InboxEvent).where(InboxEvent.source == source, InboxEvent.event_id == event_id)
            )
        ).scalar_one()
        return Received(event=row, redelivery=new_id is None)


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
    values: dict[str, Any] = {"status": status.value, "last_error": error}
    if status is not InboxStatus.PENDING:
        values |= {"outcome": outcome, "workflow_id": workflow_id, "errors": errors, "settled_at": now()}
    async with database.session() as session:
        await session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(**values))


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


async def pending(database: Database, *, attempted_before: datetime, limit: int = 100) -> Sequence[InboxEvent]:
    """Pending rows in the order they were received, skipping any whose dispatch may still be under way."""
    query = (
        select(InboxEvent)
        .where(
            InboxEvent.status == InboxStatus.PENDING.value,
            (InboxEvent.last_attempt_at.is_(None)) | (InboxEvent.last_attempt_at < attempted_before),
        )
        .order_by(InboxEvent.received_at, InboxEvent.id)
        .limit(limit)
    )
    async with database.session() as session:
        return (await session.execute(query)).scalars().all()


async def count_by_status(database: Database) -> dict[str, int]:
    """How many rows stand in each status."""
    async with database.session() as session:
        rows = await session.execute(select(InboxEvent.status, func.count()).group_by(InboxEvent.status))
        return {str(status): int(count) for status, count in rows}
