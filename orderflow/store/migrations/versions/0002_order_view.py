"""Create the order view.

Revision ID: 0002_order_view
Revises: 0001_inbox
"""

from __future__ import annotations

revision = "0002_order_view"
down_revision = "0001_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""


def downgrade() -> None:
    """Drop the tables."""
