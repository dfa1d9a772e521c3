"""Create the webhook inbox.

Revision ID: 0001_inbox
Revises: None
"""

from __future__ import annotations

revision = "0001_inbox"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""


def downgrade() -> None:
    """Drop the tables."""
