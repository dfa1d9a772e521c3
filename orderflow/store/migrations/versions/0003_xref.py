"""Create master-data cross-references.

Revision ID: 0003_xref
Revises: 0002_order_view
"""

from __future__ import annotations

revision = "0003_xref"
down_revision = "0002_order_view"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""


def downgrade() -> None:
    """Drop the tables."""
