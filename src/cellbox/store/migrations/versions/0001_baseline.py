"""The schema as it stood when migrations began (Cellbox's stop-9 release, 2026-12-02).

Databases made before then were made by ``create_all`` at start, which only ever added tables. So each table here
is made only if it is missing: such a database is brought in line, and keeps every row it has.

Revision ID: 0001_baseline
Revises:
Created: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for long-lived sequences.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index("ix_api_keys_project", "api_keys", ["project"], unique=False)


def _containers() -> None:
    op.create_table(
        "containers",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_active_at", sa.BigInteger(), nullable=False),
        sa.Column("expiry_minutes", sa.Integer(), nullable=False),
        sa.Column("memory_limit", sa.String(length=8), nullable=False),
        sa.Column("workspace", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_containers_project_seq", "containers", ["project", "seq"], unique=False)


def _conversations() -> None:
    op.create_table(
        "conversations",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_conversations_project", "conversations", ["project"], unique=False)


def _files() -> None:
    op.create_table(
        "files",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_files_project_seq", "files", ["project", "seq"], unique=False)


def _responses() -> None:
    op.create_table(
        "responses",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("previous_response_id", sa.String(length=64), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_responses_project", "responses", ["project"], unique=False)


def _container_files() -> None:
    op.create_table(
        "container_files",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["container_id"], ["containers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("container_id", "path"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_container_files_container_seq", "container_files", ["container_id", "seq"], unique=False)


def _container_networks() -> None:
    op.create_table(
        "container_networks",
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("allowed_domains", sa.JSON(), nullable=False),
        sa.Column("had_secrets", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["container_id"], ["containers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("container_id"),
    )


def _conversation_items() -> None:
    op.create_table(
        "conversation_items",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("conversation_id", "id"),
    )
    op.create_index(
        "ix_conversation_items_conversation_seq", "conversation_items", ["conversation_id", "seq"], unique=False
    )


def _response_items() -> None:
    op.create_table(
        "response_items",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("response_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["response_id"], ["responses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("response_id", "id"),
    )
    op.create_index("ix_response_items_response_seq", "response_items", ["response_id", "seq"], unique=False)


def _stored_items() -> None:
    op.create_table(
        "stored_items",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=200), nullable=False),
        sa.Column("response_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["response_id"], ["responses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_stored_items_project_id", "stored_items", ["project", "id"], unique=False)


TABLES: dict[str, Callable[[], None]] = {
    "api_keys": _api_keys,
    "containers": _containers,
    "conversations": _conversations,
    "files": _files,
    "responses": _responses,
    "container_files": _container_files,
    "container_networks": _container_networks,
    "conversation_items": _conversation_items,
    "response_items": _response_items,
    "stored_items": _stored_items,
}  # parents first


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
