"""Create the order view.

Revision ID: 0002_order_view
Revises: 0001_inbox
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_order_view"
down_revision = "0001_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table(
        "order_view",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("channel_order_id", sa.String(200), nullable=False),
        sa.Column("erp_customer_id", sa.String(100), nullable=True),
        sa.Column("channel_customer_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("needs_attention", sa.Boolean(), nullable=False),
        sa.Column("attention_reason", sa.Text(), nullable=True),
        sa.Column("attention_step", sa.String(60), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("erp_order_id", sa.String(100), nullable=True),
        sa.Column("wms_order_id", sa.String(100), nullable=True),
        sa.Column("carrier_shipment_id", sa.String(100), nullable=True),
        sa.Column("erp_invoice_id", sa.String(100), nullable=True),
        sa.Column("tracking_numbers", sa.JSON(), nullable=False),
        sa.Column("order_total", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("step_times", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_order_view"),
        sa.UniqueConstraint("key", name="uq_order_view_key"),
    )
    op.create_index("ix_order_view_status", "order_view", ["status"])
    op.create_index("ix_order_view_needs_attention", "order_view", ["needs_attention"])
    op.create_index("ix_order_view_channel", "order_view", ["channel"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index("ix_order_view_channel", table_name="order_view")
    op.drop_index("ix_order_view_needs_attention", table_name="order_view")
    op.drop_index("ix_order_view_status", table_name="order_view")
    op.drop_table("order_view")
