"""Engines and sessions for orderflow's database, and the check that it is migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

MIGRATIONS = Path(__file__).parent / "migrations"

# Stable constraint names, so migrations can name what they change on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The declarative base of every orderflow table."""

    metadata = MetaData(naming_convention=NAMING)


class DatabaseNotMigratedError(RuntimeError):
    """The database is behind the code's migrations; the message says what to run."""


def async_url(url: str) -> URL:
    """The URL with an asyncio driver: aiosqlite for SQLite, psycopg for PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def sync_url(url: str) -> URL:
    """The URL with a synchronous driver, for Alembic: sqlite3 or psycopg."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite")
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def alembic_config(url: str, *, schema: str | None = None) -> Config:
    """Alembic's configuration for this database (and PostgreSQL schema, for isolated test runs)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is a ConfigParser: a `%` (an encoded password) must be doubled to survive it.
    rendered = sync_url(url).render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    if schema:
        config.set_main_option("orderflow.schema", schema)
    return config


def _connect_args(url: URL, schema: str | None) -> dict[str, Any]:
    if schema and url.get_backend_name() == "postgresql":
        return {"options": f"-csearch_path={schema}"}
    return {}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own BEGIN is deferred: a transaction that reads, then writes, fails at once with
    # "database is locked" when another writer holds the lock (SQLite will not wait on a lock
    # upgrade that could deadlock). orderflow begins every transaction itself: see `_begin_immediate`.
    dbapi_connection.isolation_level = None
    # WAL lets the relay read while a webhook writes; a busy timeout rides out brief write locks.
    cursor = dbapi_connection.cursor()
    # The busy timeout first: a connection opened while another writes must wait, even for its pragmas.
    # 15 s, not 5: under a storm of concurrent webhooks on a loaded 2-core machine, waits past 5 s were
    # seen (answered 503, so nothing was lost). SQLite is the development database; production runs
    # PostgreSQL, which has no single write lock.
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # Take the write lock at the start, so concurrent writers queue on the busy timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One database: its async engine and sessions, and whether it is migrated to the code's head."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = url
        self.schema = schema
        target = async_url(url)
        if target.get_backend_name() == "sqlite" and target.database:
            Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(
            target, echo=echo, pool_pre_ping=True, connect_args=_connect_args(target, schema)
        )
        if target.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _begin_immediate)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def current_revision(self) -> str | None:
        """The migration the database is at, or None when it has never been migrated."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(_current_revision)

    def head_revision(self) -> str | None:
        """The newest migration the code ships."""
        return ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

    async def require_migrated(self) -> None:
        """Refuse to run against a database that is not at the code's head, saying what to run."""
        current, head = await self.current_revision(), self.head_revision()
        if current != head:
            raise DatabaseNotMigratedError(
                f"the database {make_url(self.url).render_as_string(hide_password=True)} is at migration "
                f"{current or 'none'}, the code needs {head}; run `orderflow db upgrade`"
            )

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str, *, schema: str | None = None, revision: str = "head") -> None:
    """Apply the migrations up to `revision` (synchronously; Alembic's own driver)."""
    from alembic import command

    command.upgrade(alembic_config(url, schema=schema), revision)
