"""The one-hop SQLite adapter: same results, transactions and errors as SQLAlchemy's own, one hop a statement."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import delete, func, select, update

from cellbox.errors import InvalidInput, NotFound, StoreUnavailable
from cellbox.store.db import Database
from cellbox.store.tables import ApiKey, ContainerFileRow, ContainerRow


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every call handed to an aiosqlite worker thread."""
    seen: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return seen


def container(cid: str, project: str = "p") -> ContainerRow:
    return ContainerRow(id=cid, project=project, name=cid, status="running", created_at=1, last_active_at=1,
                        memory_limit="1g", workspace=None, expiry_minutes=20)


async def test_a_read_session_is_one_hop(db: Database, hops: list[str]) -> None:
    async with db.session() as session, session.begin():
        session.add(container("c1"))
    async with db.session() as session:  # warm: the pool holds a connection now
        await session.execute(select(ContainerRow))
    hops.clear()
    async with db.session() as session:
        row = (await session.execute(select(ContainerRow).where(ContainerRow.id == "c1"))).scalar_one()
    assert row.name == "c1"
    assert hops == ["_run"]  # no cursor of its own, no fetch, no close, no rollback of nothing


async def test_a_write_is_one_hop_a_statement_and_a_commit(db: Database, hops: list[str]) -> None:
    async with db.session() as session, session.begin():
        session.add(container("c1"))
    hops.clear()
    async with db.session() as session, session.begin():
        await session.execute(update(ContainerRow).where(ContainerRow.id == "c1").values(last_active_at=5))
    assert hops == ["_run", "commit"]


async def test_rows_counts_and_generated_keys_come_back(db: Database) -> None:
    async with db.session() as session, session.begin():
        rows = [container(f"c{i}") for i in range(3)]
        session.add_all(rows)
    assert sorted(row.seq for row in rows) == [1, 2, 3]  # lastrowid / RETURNING, as before
    async with db.session() as session, session.begin():
        changed = await session.execute(update(ContainerRow).where(ContainerRow.id != "c0").values(status="x"))
        assert changed.rowcount == 2  # type: ignore[attr-defined]
    async with db.session() as session:
        listed = list((await session.execute(select(ContainerRow.id, ContainerRow.status)
                                             .order_by(ContainerRow.seq))).all())
        assert listed == [("c0", "running"), ("c1", "x"), ("c2", "x")]
        assert (await session.execute(select(func.count()).select_from(ContainerRow))).scalar_one() == 3
        assert (await session.execute(select(ContainerRow).where(ContainerRow.id == "none"))).first() is None


async def test_a_failed_transaction_is_rolled_back(db: Database) -> None:
    async with db.session() as session, session.begin():
        session.add(ApiKey(hash="h1", project="p", created_at=1))

    async def delete_then_fail() -> None:
        async with db.session() as session, session.begin():
            await session.execute(delete(ApiKey))
            raise RuntimeError("after a write, before the commit")

    with pytest.raises(RuntimeError):
        await delete_then_fail()
    async with db.session() as session:
        assert (await session.execute(select(ApiKey.project))).scalars().all() == ["p"]


async def test_database_errors_are_translated_as_before(db: Database) -> None:
    async with db.session() as session, session.begin():
        session.add(container("c1"))
    with pytest.raises(InvalidInput):  # a unique constraint
        async with db.session() as session, session.begin():
            session.add(container("c1"))
    with pytest.raises(NotFound):  # a foreign key
        async with db.session() as session, session.begin():
            session.add(ContainerFileRow(id="cf", container_id="gone", path="/mnt/data/a", bytes=1,
                                         source="user", created_at=1))


async def test_concurrent_sessions_each_see_their_own_results(db: Database) -> None:
    async with db.session() as session, session.begin():
        session.add_all([container(f"c{i}", project=f"p{i}") for i in range(20)])

    async def project_of(i: int) -> str:
        async with db.session() as session:
            return (await session.execute(select(ContainerRow.project).where(ContainerRow.id == f"c{i}"))).scalar_one()

    assert await asyncio.gather(*(project_of(i) for i in range(20))) == [f"p{i}" for i in range(20)]


async def test_a_lookup_is_no_hop_and_sees_every_commit_at_once(db: Database, hops: list[str]) -> None:
    by_id = select(ContainerRow.id, ContainerRow.status).where(ContainerRow.id == "c1")
    assert await db.lookup(by_id, {}) is None
    async with db.session() as session, session.begin():
        session.add(container("c1"))
    hops.clear()
    assert dict(await db.lookup(by_id, {}) or {}) == {"id": "c1", "status": "running"}
    assert hops == []
    async with db.session() as session, session.begin():
        await session.execute(update(ContainerRow).where(ContainerRow.id == "c1").values(status="expired"))
    assert (await db.lookup(by_id, {}) or {})["status"] == "expired"


async def test_a_lookup_cannot_write(db: Database) -> None:
    with pytest.raises(StoreUnavailable):  # the reader's connection is read-only, whatever it is handed
        await db.lookup(delete(ContainerRow), {})
