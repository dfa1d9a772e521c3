"""A freshly migrated database per test, on SQLite and on PostgreSQL: every store test runs on both.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, database `test`), as on every developer
machine and CI; each test gets its own schema, dropped afterwards. Set ORDERFLOW_TEST_POSTGRES_URL
to point elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from orderflow.store.db import Database, upgrade

POSTGRES_URL = os.environ.get("ORDERFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database migrated to head: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'orderflow.db'}"
        upgrade(url)
        db = Database(url)
        try:
            yield db
        finally:
            await db.dispose()
        return
    schema = f"of_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        upgrade(POSTGRES_URL, schema=schema)
        db = Database(POSTGRES_URL, schema=schema)
        try:
            yield db
        finally:
            await db.dispose()
    finally:
        with psycopg.connect(_plain(POSTGRES_URL), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
