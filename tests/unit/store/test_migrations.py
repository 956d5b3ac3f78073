"""Migrations, on SQLite and on a real PostgreSQL: from an empty database, from the stop-9 release's schema (the
last made by ``create_all``, frozen in ``schemas/``), and against the tables the code declares."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, select, text

from cellbox.errors import StoreUnavailable
from cellbox.store import migrations
from cellbox.store.db import Database
from cellbox.store.tables import Base, ContainerRow
from tests.postgres import Postgres

SCHEMAS = Path(__file__).parent / "schemas"
TABLES = set(Base.metadata.tables)
LATER_TABLES = {"nodes"}  # made by revisions after the stop-9 schema


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'cellbox.db'}"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.database()


def load(url: str, *names: str, leave_out: str = "") -> None:
    """Run the frozen SQL files against the database, statement by statement, as the old release left it."""
    engine = create_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as connection:
            for name in names:
                lines = (SCHEMAS / name).read_text().splitlines()
                for statement in "\n".join(line for line in lines if not line.startswith("--")).split(";"):
                    if statement.strip() and not (leave_out and leave_out in statement.split("(")[0]):
                        connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def schema_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def inspected(db: Database) -> dict[str, Any]:
    """The revision, the tables, and what autogenerate would still change to match ``tables.py``."""

    def look(connection: Connection) -> dict[str, Any]:
        return {"revision": migrations.current(connection), "tables": set(inspect(connection).get_table_names()),
                "drift": compare_metadata(MigrationContext.configure(connection), Base.metadata)}

    async with db.engine.connect() as connection:
        return await connection.run_sync(look)


async def test_an_empty_database_gets_the_whole_schema(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
        state = await inspected(db)
        assert state["revision"] == migrations.head()
        assert state["tables"] == TABLES | {"alembic_version"}
        assert state["drift"] == []
        await db.migrate()  # a second start changes nothing
        assert await inspected(db) == state
    finally:
        await db.aclose()


async def test_a_stop9_database_keeps_every_row(url: str) -> None:
    load(url, f"stop9.{schema_of(url)}.sql", "stop9.rows.sql")
    db = Database(url)
    try:
        await db.migrate()
        state = await inspected(db)
        assert (state["revision"], state["drift"]) == (migrations.head(), [])
        async with db.session() as session:
            for table in TABLES:
                count = (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                assert count == (0 if table in LATER_TABLES else 1), table
            box = (await session.execute(select(ContainerRow))).unique().scalar_one()
            assert (box.id, box.name, box.network and box.network.allowed_domains) == ("cntr_1", "kept", ["pypi.org"])
            assert box.node_id is None  # a container from before nodes: the first node to start takes it
    finally:
        await db.aclose()


async def test_a_database_from_before_a_table_existed_gains_it(url: str) -> None:
    load(url, f"stop9.{schema_of(url)}.sql", leave_out="container_networks")
    db = Database(url)
    try:
        await db.migrate()
        state = await inspected(db)
        assert "container_networks" in state["tables"]
        assert state["drift"] == []
    finally:
        await db.aclose()


async def test_a_database_a_newer_release_migrated_is_refused_untouched(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
        async with db.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
        with pytest.raises(StoreUnavailable, match=r"'9999_future'.*newer release"):
            await db.migrate()
        assert (await inspected(db))["revision"] == "9999_future"
    finally:
        await db.aclose()


async def test_replicas_starting_together_all_come_up_on_one_schema(url: str) -> None:
    """Separate processes, as replicas are (Alembic's own state is per process)."""
    code = "import asyncio, sys\nfrom cellbox.store.db import Database\n" \
           "async def up():\n    db = Database(sys.argv[1])\n    await db.migrate()\n    await db.aclose()\n" \
           "asyncio.run(up())"
    replicas = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, stderr=subprocess.PIPE)
                for _ in range(4)]
    for replica in replicas:
        _, err = await replica.communicate()
        assert replica.returncode == 0, err.decode()
    db = Database(url)
    try:
        state = await inspected(db)
        assert (state["revision"], state["drift"]) == (migrations.head(), [])
        async with db.engine.connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert len(versions) == 1
    finally:
        await db.aclose()


async def test_every_revision_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'cellbox.db'}")
    try:
        await db.migrate()
        async with db.engine.begin() as connection:
            await connection.run_sync(lambda c: command.downgrade(migrations.config(c), "base"))
        assert (await inspected(db))["tables"] == {"alembic_version"}
        await db.migrate()
        state = await inspected(db)
        assert (state["revision"], state["drift"]) == (migrations.head(), [])
    finally:
        await db.aclose()


async def test_a_stop10_database_gains_roles_and_keeps_its_rows(url: str) -> None:
    """Stop 10's release was at 0002_nodes: its servers become 'all', its responses belong to no server yet."""
    engine = create_engine(url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.config(connection), "0002_nodes")
            connection.exec_driver_sql(
                "INSERT INTO nodes (id, url, state, version, started_at, heartbeat_at, containers, max_containers, "
                "memory_available) VALUES ('node_old', 'http://127.0.0.1:8000', 'up', '0.1.0', 1, 1, 0, 10, 1)")
            connection.exec_driver_sql(
                "INSERT INTO responses (id, project, created_at, status, body) VALUES "
                "('resp_old', 'p', 1, 'in_progress', '{\"response\": {\"id\": \"resp_old\"}}')")
    finally:
        engine.dispose()
    db = Database(url)
    try:
        await db.migrate()
        state = await inspected(db)
        assert (state["revision"], state["drift"]) == (migrations.head(), [])
        async with db.session() as session:
            assert (await session.execute(text("SELECT role FROM nodes"))).scalar_one() == "all"
            assert (await session.execute(text("SELECT node_id FROM responses"))).one() == (None,)
    finally:
        await db.aclose()
