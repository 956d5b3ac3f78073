"""Roles: which kind of server each row of ``nodes`` is (all, api or node), and which server runs each response.

Servers before this revision were all 'all'; responses before it have no server, and the first server to start
fails those it finds unfinished, as a restarted server always did.

Revision ID: 0003_roles
Revises: 0002_nodes
Created: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_roles"
down_revision = "0002_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="all"))
    with op.batch_alter_table("responses") as batch:  # SQLite adds a nullable column in place: no copy
        batch.add_column(sa.Column("node_id", sa.String(length=64), nullable=True))
        batch.create_index("ix_responses_node_id", ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.drop_index("ix_responses_node_id")
        batch.drop_column("node_id")
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("role")
