"""Alembic's environment: the same migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from orderflow.store.db import Base
from orderflow.store.tables import load_all_tables

load_all_tables()
config = context.config
schema = config.get_main_option("orderflow.schema")
url = config.get_main_option("sqlalchemy.url")
assert url is not None

connect_args = {"options": f"-csearch_path={schema}"} if schema and url.startswith("postgresql") else {}
engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables where needed.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
