"""The Amazon feed ledger: which feed each idempotency key submitted, shared by every worker.

Amazon's feeds carry no idempotency key, so a refund retried on another worker (or after a
restart) can only find the feed it already sent here. A row is written with the feed document
before createFeed and completed with the feed id when Amazon answers; a row without a feed id is
a submission in doubt (see `AmazonClient.find_feed` for what a retry makes of it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.adapters.amazon import FeedEntry
from orderflow.store.db import Base, Database


class AmazonFeed(Base):
    """One feed submission under an idempotency key: its document, then Amazon's feed id."""

    __tablename__ = "amazon_feed"

    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    feed_type: Mapped[str] = mapped_column(String(64))
    # Indexed: an operator settling a submission in doubt starts from the order.
    amazon_order_id: Mapped[str] = mapped_column(String(64), index=True)
    document_id: Mapped[str] = mapped_column(String(255))
    feed_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_TABLE: Table = AmazonFeed.__table__  # type: ignore[assignment]


def _aware(moment: datetime) -> datetime:
    # SQLite hands times back naive, though they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _entry(row: Any) -> FeedEntry:
    return FeedEntry(
        key=row.idempotency_key,
        feed_type=row.feed_type,
        amazon_order_id=row.amazon_order_id,
        document_id=row.document_id,
        recorded_at=_aware(row.created_at),
        feed_id=row.feed_id,
    )


class AmazonFeedLedger:
    """The feed ledger in orderflow's database (SQLite or PostgreSQL); an `amazon.FeedLedger`."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def find(self, key: str) -> FeedEntry | None:
        """The submission under this key, if any worker made one."""
        async with self.database.engine.connect() as connection:
            row = (await connection.execute(select(_TABLE).where(_TABLE.c.idempotency_key == key))).first()
        return None if row is None else _entry(row)

    async def claim(self, entry: FeedEntry) -> FeedEntry:
        """Record a document about to be submitted unless the key has one; the entry that stands (ours or the first).

        Race-safe across workers: the key is the primary key, a losing insert does nothing, and the
        loser reads the winner's row (PostgreSQL's next statement sees the committed winner; SQLite
        has one writer at a time).
        """
        values = {
            "idempotency_key": entry.key,
            "feed_type": entry.feed_type,
            "amazon_order_id": entry.amazon_order_id,
            "document_id": entry.document_id,
            "feed_id": entry.feed_id,
            "created_at": entry.recorded_at,
            "updated_at": entry.recorded_at,
        }
        async with self.database.engine.begin() as connection:
            dialect = connection.dialect.name
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_TABLE).values(values)
            # RETURNING, not rowcount: psycopg does not report a skipped ON CONFLICT row as zero rows.
            won = (
                await connection.execute(
                    insert.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(_TABLE.c.document_id)
                )
            ).first()
            if won is not None:
                return entry
            row = (await connection.execute(select(_TABLE).where(_TABLE.c.idempotency_key == entry.key))).one()
        return _entry(row)

    async def record(self, key: str, *, document_id: str, feed_id: str) -> None:
        """Amazon accepted this key's document as `feed_id` (a row already settled is left as it is)."""
        async with self.database.engine.begin() as connection:
            await connection.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.idempotency_key == key,
                    _TABLE.c.document_id == document_id,
                    _TABLE.c.feed_id.is_(None),
                )
                .values(feed_id=feed_id, updated_at=datetime.now(UTC))
            )

    async def release(self, key: str, *, document_id: str) -> None:
        """Nothing was submitted under this key's document (Amazon refused it): the key is free again.

        Also what an operator does after finding in Seller Central that a submission in doubt never
        arrived. Only that document's row goes, and only while it has no feed id.
        """
        async with self.database.engine.begin() as connection:
            await connection.execute(
                delete(_TABLE).where(
                    _TABLE.c.idempotency_key == key,
                    _TABLE.c.document_id == document_id,
                    _TABLE.c.feed_id.is_(None),
                )
            )

    async def settle(self, key: str, *, feed_id: str) -> bool:
        """An operator found the feed a submission in doubt made (Seller Central's upload history); False if none."""
        async with self.database.engine.begin() as connection:
            settled = (
                await connection.execute(
                    update(_TABLE)
                    .where(_TABLE.c.idempotency_key == key, _TABLE.c.feed_id.is_(None))
                    .values(feed_id=feed_id, updated_at=datetime.now(UTC))
                    .returning(_TABLE.c.idempotency_key)
                )
            ).first()
        return settled is not None

    async def in_doubt(self, *, recorded_before: datetime) -> list[FeedEntry]:
        """Submissions still without a feed id that were recorded before a time, oldest first (for operators)."""
        query = (
            select(_TABLE)
            .where(_TABLE.c.feed_id.is_(None), _TABLE.c.created_at < recorded_before)
            .order_by(_TABLE.c.created_at)
        )
        async with self.database.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_entry(row) for row in rows]

    async def recent(self, limit: int) -> list[FeedEntry]:
        """The latest submissions, settled or not, newest first (for operators)."""
        query = select(_TABLE).order_by(_TABLE.c.created_at.desc(), _TABLE.c.idempotency_key).limit(limit)
        async with self.database.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_entry(row) for row in rows]


__all__ = ["AmazonFeed", "AmazonFeedLedger"]
