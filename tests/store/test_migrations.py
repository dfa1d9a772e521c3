"""The migrations: the same chain on SQLite and PostgreSQL, and services refuse an unmigrated database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

from orderflow.cli import app
from orderflow.store.db import Base, Database, DatabaseNotMigratedError
from orderflow.store.tables import load_all_tables


async def test_a_migrated_database_is_at_the_codes_head(database: Database) -> None:
    assert await database.current_revision() == database.head_revision()
    await database.require_migrated()


async def test_an_unmigrated_database_is_refused_with_what_to_run(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        with pytest.raises(DatabaseNotMigratedError, match="run `orderflow db upgrade`"):
            await database.require_migrated()
    finally:
        await database.dispose()


def test_db_upgrade_then_current_from_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    behind = runner.invoke(app, ["db", "current", "--url", url])
    assert behind.exit_code == 1 and "not migrated" in behind.output
    upgraded = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert upgraded.exit_code == 0, upgraded.output
    again = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert again.exit_code == 0
    current = runner.invoke(app, ["db", "current", "--url", url])
    head = Database(url).head_revision()
    assert head and current.exit_code == 0 and head in current.output


def test_db_upgrade_of_an_unreachable_database_exits_2() -> None:
    result = CliRunner().invoke(app, ["db", "upgrade", "--url", "postgresql://nobody@127.0.0.1:9/none"])
    assert result.exit_code == 2
    assert "cannot migrate" in result.output


async def test_the_feed_ledger_migration_builds_the_table_its_model_declares(database: Database) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection)
        return [d for d in compare_metadata(context, Base.metadata) if "amazon_feed" in repr(d)]

    load_all_tables()
    async with database.engine.connect() as connection:
        drift = await connection.run_sync(differences)

    assert drift == []
