"""Cross-references: how a channel's SKUs, customers, ship methods and locations map to our systems.

Four tables, one per kind, each unique per (channel, channel key). An operator sets rows by hand or
imports them from CSV; accept also remembers what it learnt from the ERP (an item found by name, a
customer matched or created), but never overwrites a row an operator set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints
from sqlalchemy import DateTime, String, UniqueConstraint, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from orderflow.canonical import Channel, PaymentTerms
from orderflow.canonical.base import CanonicalModel, Sku
from orderflow.store.db import Base, Database

# Internal ids in NetSuite are numbers; refusing anything else catches a SKU typed as an item id.
ErpId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{1,18}$")]
Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class XrefKind(StrEnum):
    """What a cross-reference maps: a channel's SKU, customer, ship method or location."""

    SKU = "sku"
    CUSTOMER = "customer"
    SHIP_METHOD = "ship-method"
    LOCATION = "location"


class XrefSource(StrEnum):
    """Who wrote a cross-reference: an operator (set or import), or accept caching an ERP lookup."""

    OPERATOR = "operator"
    ERP_LOOKUP = "erp-lookup"


class CrossReference(CanonicalModel):
    """One mapping from a channel's key to our systems' ids."""

    kind: ClassVar[XrefKind]
    key_field: ClassVar[str]

    channel: Channel
    source: XrefSource = XrefSource.OPERATOR
    updated_at: datetime | None = Field(default=None, description="Set by the store when written")

    @property
    def key(self) -> str:
        """The channel's key this row maps (its SKU, customer id, ship method or location id)."""
        return str(getattr(self, self.key_field))

    def mapped_values(self) -> dict[str, Any]:
        """The mapped columns, as stored."""
        skip = {"channel", self.key_field, "source", "updated_at"}
        return {k: (v.value if isinstance(v, StrEnum) else v) for k, v in self.model_dump().items() if k not in skip}


class SkuXref(CrossReference):
    """A channel SKU as an ERP item and a WMS SKU (the same SKU when not given)."""

    kind = XrefKind.SKU
    key_field = "channel_sku"

    channel_sku: Sku
    erp_item_id: ErpId
    wms_sku: Sku | None = None


class CustomerXref(CrossReference):
    """A channel customer as an ERP customer and the terms they buy on."""

    kind = XrefKind.CUSTOMER
    key_field = "channel_customer_id"

    channel_customer_id: Key
    erp_customer_id: ErpId
    terms: PaymentTerms


class ShipMethodXref(CrossReference):
    """A channel's ship method (as the buyer chose it) as a carrier's service."""

    kind = XrefKind.SHIP_METHOD
    key_field = "channel_ship_method"

    channel_ship_method: Key
    carrier: Key
    carrier_service: Key


class LocationXref(CrossReference):
    """A channel's fulfilment location as one of our warehouses."""

    kind = XrefKind.LOCATION
    key_field = "channel_location_id"

    channel_location_id: Key
    warehouse_id: Key


MODELS: dict[XrefKind, type[CrossReference]] = {
    XrefKind.SKU: SkuXref,
    XrefKind.CUSTOMER: CustomerXref,
    XrefKind.SHIP_METHOD: ShipMethodXref,
    XrefKind.LOCATION: LocationXref,
}


def _now() -> datetime:
    return datetime.now(UTC)


class _Row:
    """Columns every cross-reference table has."""

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SkuXrefRow(_Row, Base):
    """A row of `xref_sku`."""

    __tablename__ = "xref_sku"
    __table_args__ = (UniqueConstraint("channel", "channel_sku"),)
    channel_sku: Mapped[str] = mapped_column(String(64))
    erp_item_id: Mapped[str] = mapped_column(String(32))
    wms_sku: Mapped[str | None] = mapped_column(String(64))


class CustomerXrefRow(_Row, Base):
    """A row of `xref_customer`."""

    __tablename__ = "xref_customer"
    __table_args__ = (UniqueConstraint("channel", "channel_customer_id"),)
    channel_customer_id: Mapped[str] = mapped_column(String(255))
    erp_customer_id: Mapped[str] = mapped_column(String(32))
    terms: Mapped[str] = mapped_column(String(16))


class ShipMethodXrefRow(_Row, Base):
    """A row of `xref_ship_method`."""

    __tablename__ = "xref_ship_method"
    __table_args__ = (UniqueConstraint("channel", "channel_ship_method"),)
    channel_ship_method: Mapped[str] = mapped_column(String(255))
    carrier: Mapped[str] = mapped_column(String(255))
    carrier_service: Mapped[str] = mapped_column(String(255))


class LocationXrefRow(_Row, Base):
    """A row of `xref_location`."""

    __tablename__ = "xref_location"
    __table_args__ = (UniqueConstraint("channel", "channel_location_id"),)
    channel_location_id: Mapped[str] = mapped_column(String(255))
    warehouse_id: Mapped[str] = mapped_column(String(255))


ROWS: dict[XrefKind, Any] = {
    XrefKind.SKU: SkuXrefRow,
    XrefKind.CUSTOMER: CustomerXrefRow,
    XrefKind.SHIP_METHOD: ShipMethodXrefRow,
    XrefKind.LOCATION: LocationXrefRow,
}


def _entry(kind: XrefKind, row: Any) -> CrossReference:
    model = MODELS[kind]
    fields = {name: getattr(row, name) for name in model.model_fields}
    updated = fields["updated_at"]
    if updated is not None and updated.tzinfo is None:
        fields["updated_at"] = updated.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return model.model_validate(fields)


def _insert(session: AsyncSession, table: Any) -> Any:
    # INSERT ... ON CONFLICT is spelt the same on both, but SQLAlchemy builds it per dialect.
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


async def _write(session: AsyncSession, entry: CrossReference, *, overwrite: bool) -> bool:
    row = ROWS[entry.kind]
    key_column = getattr(row, entry.key_field)
    values = {"channel": entry.channel.value, entry.key_field: entry.key, "source": entry.source.value,
              "updated_at": _now(), **entry.mapped_values()}  # fmt: skip
    statement = _insert(session, row.__table__).values(**values)
    target = [row.channel, key_column]
    if overwrite:
        changes = {k: v for k, v in values.items() if k not in ("channel", entry.key_field)}
        statement = statement.on_conflict_do_update(index_elements=target, set_=changes)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=target)
    # RETURNING, not rowcount: psycopg does not report a skipped ON CONFLICT row as zero rows.
    written = (await session.execute(statement.returning(row.id))).first()
    return written is not None


class CrossReferences:
    """The cross-reference tables: look up, set, remember, delete, list and import mappings."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get(self, kind: XrefKind, channel: Channel, key: str) -> CrossReference | None:
        """The mapping of one channel key, or None."""
        found = await self.get_many(kind, channel, [key])
        return found.get(key)

    async def get_many(self, kind: XrefKind, channel: Channel, keys: Iterable[str]) -> dict[str, CrossReference]:
        """The mappings of these channel keys that exist, by key."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        row = ROWS[kind]
        key_column = getattr(row, MODELS[kind].key_field)
        query = select(row).where(row.channel == channel.value, key_column.in_(wanted))
        async with self.database.session() as session:
            rows = (await session.execute(query)).scalars().all()
        entries = [_entry(kind, r) for r in rows]
        return {entry.key: entry for entry in entries}

    async def skus(self, channel: Channel, skus: Iterable[str]) -> dict[str, SkuXref]:
        """The SKU mappings of these channel SKUs that exist, by SKU."""
        found = await self.get_many(XrefKind.SKU, channel, skus)
        return {k: v for k, v in found.items() if isinstance(v, SkuXref)}

    async def customer(self, channel: Channel, channel_customer_id: str) -> CustomerXref | None:
        """The mapping of one channel customer, or None."""
        found = await self.get(XrefKind.CUSTOMER, channel, channel_customer_id)
        return found if isinstance(found, CustomerXref) else None

    async def set(self, entry: CrossReference) -> None:
        """Create or replace the mapping of the entry's channel key."""
        async with self.database.session() as session:
            await _write(session, entry, overwrite=True)

    async def remember(self, entries: Sequence[CrossReference]) -> int:
        """Add mappings learnt from the ERP where none exists yet (an operator's row always wins)."""
        async with self.database.session() as session:
            added = [await _write(session, e.model_copy(update={"source": XrefSource.ERP_LOOKUP}), overwrite=False)
                     for e in entries]  # fmt: skip
        return sum(added)

    async def import_all(self, entries: Sequence[CrossReference]) -> int:
        """Set every mapping in one transaction: all of them are stored, or none is."""
        async with self.database.session() as session:
            for entry in entries:
                await _write(session, entry, overwrite=True)
        return len(entries)

    async def delete(self, kind: XrefKind, channel: Channel, key: str) -> bool:
        """Remove the mapping of one channel key; False when there was none."""
        row = ROWS[kind]
        key_column = getattr(row, MODELS[kind].key_field)
        async with self.database.session() as session:
            result: Any = await session.execute(delete(row).where(row.channel == channel.value, key_column == key))
        return bool(result.rowcount)

    async def listing(self, kind: XrefKind | None = None, *, channel: Channel | None = None) -> list[CrossReference]:
        """Every mapping (of one kind, of one channel), ordered by kind, channel and key."""
        entries: list[CrossReference] = []
        async with self.database.session() as session:
            for each in [kind] if kind is not None else list(XrefKind):
                row = ROWS[each]
                key_column = getattr(row, MODELS[each].key_field)
                query = select(row).order_by(row.channel, key_column)
                if channel is not None:
                    query = query.where(row.channel == channel.value)
                entries += [_entry(each, r) for r in (await session.execute(query)).scalars().all()]
        return entries


__all__ = [
    "MODELS",
    "CrossReference",
    "CrossReferences",
    "CustomerXref",
    "LocationXref",
    "ShipMethodXref",
    "SkuXref",
    "XrefKind",
    "XrefSource",
]
