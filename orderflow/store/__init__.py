"""orderflow's own database: the webhook inbox, the order view and the master-data cross-references.

SQLAlchemy 2.0 with Alembic migrations; SQLite by default (a file under `.orderflow/`), PostgreSQL
when `ORDERFLOW_DATABASE_URL` names one. The same migrations run on both.
"""

from orderflow.store.db import Base, Database, DatabaseNotMigratedError, async_url, sync_url

__all__ = ["Base", "Database", "DatabaseNotMigratedError", "async_url", "sync_url"]
