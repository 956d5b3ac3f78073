"""Alembic's entry: migrate the connection Cellbox hands over, or, for ``alembic revision``, the configured
database (CELLBOX_DATABASE_URL or the data directory's SQLite file, as the server would use)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from cellbox.config import Settings
from cellbox.store.tables import Base


def _run(connection: Connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (a copy-and-move SQLite needs for most ALTERs).
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


given: Connection | None = context.config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    url = Settings().database.replace("+aiosqlite", "").replace("+asyncpg", "")
    with create_engine(url).connect() as own:
        _run(own)
        own.commit()
