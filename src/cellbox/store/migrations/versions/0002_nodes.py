"""Nodes: the servers that run containers, and which one runs each container.

Containers made before this revision have no node; the first node to start takes them as its own.

Revision ID: 0002_nodes
Revises: 0001_baseline
Created: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_nodes"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_at", sa.BigInteger(), nullable=False),
        sa.Column("containers", sa.Integer(), nullable=False),
        sa.Column("max_containers", sa.Integer(), nullable=False),
        sa.Column("memory_available", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("containers") as batch:  # SQLite adds a nullable column in place: no copy
        batch.add_column(sa.Column("node_id", sa.String(length=64), nullable=True))
        batch.create_index("ix_containers_node_id", ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("containers") as batch:
        batch.drop_index("ix_containers_node_id")
        batch.drop_column("node_id")
    op.drop_table("nodes")
