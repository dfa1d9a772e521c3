"""Create the Amazon feed ledger.

Revision ID: 0004_amazon_feed
Revises: 0003_xref
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_amazon_feed"
down_revision = "0003_xref"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "amazon_feed",
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("feed_type", sa.String(64), nullable=False),
        sa.Column("amazon_order_id", sa.String(64), nullable=False),
        sa.Column("document_id", sa.String(255), nullable=False),
        # Null from the moment the document is recorded until createFeed answers.
        sa.Column("feed_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_amazon_feed")),
    )
    op.create_index(op.f("ix_amazon_feed_amazon_order_id"), "amazon_feed", ["amazon_order_id"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index(op.f("ix_amazon_feed_amazon_order_id"), table_name="amazon_feed")
    op.drop_table("amazon_feed")
