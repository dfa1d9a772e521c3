"""Create master-data cross-references.

Revision ID: 0003_xref
Revises: 0002_order_view
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_xref"
down_revision = "0002_order_view"
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, str, int, list[sa.Column[str]]]]:
    # Built per call: a Column belongs to one Table, so each upgrade gets fresh ones.
    return [
        ("xref_sku", "channel_sku", 64, [
            sa.Column("erp_item_id", sa.String(32), nullable=False),
            sa.Column("wms_sku", sa.String(64), nullable=True),
        ]),
        ("xref_customer", "channel_customer_id", 255, [
            sa.Column("erp_customer_id", sa.String(32), nullable=False),
            sa.Column("terms", sa.String(16), nullable=False),
        ]),
        ("xref_ship_method", "channel_ship_method", 255, [
            sa.Column("carrier", sa.String(255), nullable=False),
            sa.Column("carrier_service", sa.String(255), nullable=False),
        ]),
        ("xref_location", "channel_location_id", 255, [
            sa.Column("warehouse_id", sa.String(255), nullable=False),
        ]),
    ]  # fmt: skip


def upgrade() -> None:
    """Create the tables."""
    for table, key, width, mapped in _tables():
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("channel", sa.String(32), nullable=False),
            sa.Column(key, sa.String(width), nullable=False),
            *mapped,
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
            sa.UniqueConstraint("channel", key, name=f"uq_{table}_channel"),
        )


def downgrade() -> None:
    """Drop the tables."""
    for table, _key, _width, _mapped in reversed(_tables()):
        op.drop_table(table)
