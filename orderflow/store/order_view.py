"""The order view: one row per saga, kept current by the saga itself, never moved backwards.

Each update carries the saga's whole state and its transition counter (`version`). The write is a
conditional upsert (`ON CONFLICT (key) DO UPDATE ... WHERE order_view.version < excluded.version`),
the same statement on SQLite and PostgreSQL: the same update twice is a no-op, and an older one that
arrives late is ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.canonical.money import Money
from orderflow.canonical.saga import OrderSagaState, OrderStatus, OrderView, OrderViewPage, OrderViewUpdate
from orderflow.store.db import Base, Database

DEFAULT_PAGE = 50
MAX_PAGE = 500


class InvalidCursorError(ValueError):
    """A page cursor this view did not hand out."""


class OrderViewRow(Base):
    """A saga's latest known state, flattened for filtering, with the whole state alongside."""

    __tablename__ = "order_view"

    # A surrogate id orders pages newest-first and makes a stable cursor: it never changes once
    # a saga's first update creates the row, unlike `updated_at`.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(40), index=True)
    channel_order_id: Mapped[str] = mapped_column(String(200))
    erp_customer_id: Mapped[str | None] = mapped_column(String(100))
    channel_customer_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(40), index=True)
    needs_attention: Mapped[bool] = mapped_column(Boolean, index=True)
    attention_reason: Mapped[str | None] = mapped_column(Text)
    attention_step: Mapped[str | None] = mapped_column(String(60))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    erp_order_id: Mapped[str | None] = mapped_column(String(100))
    wms_order_id: Mapped[str | None] = mapped_column(String(100))
    carrier_shipment_id: Mapped[str | None] = mapped_column(String(100))
    erp_invoice_id: Mapped[str | None] = mapped_column(String(100))
    tracking_numbers: Mapped[list[str]] = mapped_column(JSON)
    # Decimal text, not NUMERIC: SQLite would hand NUMERIC back through a float and lose cents.
    order_total: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    step_times: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _columns(update: OrderViewUpdate) -> dict[str, Any]:
    """The row an update describes, every column but `id` and `created_at`."""
    state = update.state
    steps = {record.step: record.at for record in [*state.steps_done, *state.compensations_done]}
    return {
        "key": state.key,
        "channel": state.channel,
        "channel_order_id": update.channel_order_id,
        "erp_customer_id": state.ids.erp_customer_id,
        "channel_customer_id": update.channel_customer_id,
        "status": state.status.value,
        "needs_attention": state.needs_attention,
        "attention_reason": state.attention_reason,
        "attention_step": state.attention_step,
        "cancel_reason": state.cancel_reason,
        "erp_order_id": state.ids.erp_order_id,
        "wms_order_id": state.ids.wms_order_id,
        "carrier_shipment_id": state.ids.carrier_shipment_id,
        "erp_invoice_id": state.ids.erp_invoice_id,
        "tracking_numbers": list(state.ids.tracking_numbers),
        "order_total": str(update.order_total.amount),
        "currency": update.order_total.currency,
        "step_times": steps,
        "state": state.model_dump(mode="json"),
        "version": update.version,
        "updated_at": _utc(update.at),
    }


def _view(row: OrderViewRow) -> OrderView:
    return OrderView(
        key=row.key,
        channel=row.channel,
        channel_order_id=row.channel_order_id,
        erp_customer_id=row.erp_customer_id,
        channel_customer_id=row.channel_customer_id,
        status=OrderStatus(row.status),
        needs_attention=row.needs_attention,
        attention_reason=row.attention_reason,
        attention_step=row.attention_step,
        cancel_reason=row.cancel_reason,
        erp_order_id=row.erp_order_id,
        wms_order_id=row.wms_order_id,
        carrier_shipment_id=row.carrier_shipment_id,
        erp_invoice_id=row.erp_invoice_id,
        tracking_numbers=row.tracking_numbers,
        order_total=Money.of(row.order_total, row.currency),
        step_times=row.step_times,
        version=row.version,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        state=OrderSagaState.model_validate(row.state),
    )


def parse_cursor(cursor: str | None) -> int | None:
    """The row id a cursor stands for; raises InvalidCursorError for anything this view did not hand out."""
    if cursor is None or cursor == "":
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidCursorError(f"not a cursor from this list: {cursor[:40]!r}")
    return int(cursor)


class OrderViews:
    """The order view in one database: record a saga's transition, read one order, list a page."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, update: OrderViewUpdate) -> bool:
        """Apply an update if it is newer than the row; True if it changed the view."""
        values = _columns(update)
        dialect = self.database.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        proposed = insert(OrderViewRow).values(**values, created_at=values["updated_at"])
        statement = proposed.on_conflict_do_update(
            index_elements=[OrderViewRow.key],
            set_={name: proposed.excluded[name] for name in values if name != "key"},
            where=OrderViewRow.version < proposed.excluded.version,
        ).returning(OrderViewRow.version)
        # RETURNING, not rowcount: a skipped conflict returns no row on both databases.
        async with self.database.session() as session:
            applied = (await session.execute(statement)).first()
        return applied is not None

    async def get(self, key: str) -> OrderView | None:
        """One order by its saga key, or None if the view has never heard of it."""
        async with self.database.session() as session:
            row = await session.scalar(select(OrderViewRow).where(OrderViewRow.key == key))
            return _view(row) if row is not None else None

    async def list(
        self,
        *,
        status: OrderStatus | None = None,
        needs_attention: bool | None = None,
        channel: str | None = None,
        customer: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> OrderViewPage:
        """A page of orders, newest first, filtered; raises InvalidCursorError for a foreign cursor."""
        after = parse_cursor(cursor)
        limit = max(1, min(limit, MAX_PAGE))
        query = select(OrderViewRow).order_by(OrderViewRow.id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(OrderViewRow.status == status.value)
        if needs_attention is not None:
            query = query.where(OrderViewRow.needs_attention == needs_attention)
        if channel is not None:
            query = query.where(OrderViewRow.channel == channel)
        if customer is not None:
            query = query.where(
                (OrderViewRow.erp_customer_id == customer) | (OrderViewRow.channel_customer_id == customer)
            )
        if after is not None:
            query = query.where(OrderViewRow.id < after)
        async with self.database.session() as session:
            rows = list((await session.scalars(query)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        return OrderViewPage(
            orders=[_view(row) for row in rows], next_cursor=str(rows[-1].id) if more and rows else None
        )
