"""Keep each inbox row's trace context, so the relay's dispatch continues the webhook's trace.

Revision ID: 0005_inbox_traceparent
Revises: 0004_amazon_feed
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_inbox_traceparent"
down_revision = "0004_amazon_feed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (null for rows stored before, or while tracing is off)."""
    op.add_column("inbox_event", sa.Column("traceparent", sa.String(128), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("inbox_event") as batch:
        batch.drop_column("traceparent")
