"""Importing every table module registers its tables on `Base.metadata` (for Alembic and tests)."""

from __future__ import annotations

import importlib

# One module per slice of the store; each defines its own tables.
TABLE_MODULES = (
    "orderflow.store.inbox",
    "orderflow.store.order_view",
    "orderflow.store.xref",
    "orderflow.store.feed_ledger",
)


def load_all_tables() -> None:
    """Import every module that defines tables."""
    for module in TABLE_MODULES:
        importlib.import_module(module)
