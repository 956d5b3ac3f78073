"""The node registry: ids kept per data directory, heartbeats, losing a silent node (and its containers and
responses), drain, placement."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cellbox.config import Settings
from cellbox.errors import InvalidInput, NotFound, SandboxUnavailable
from cellbox.ids import now
from cellbox.schemas.containers import CreateContainer
from cellbox.services.containers import Containers
from cellbox.services.history import History
from cellbox.services.nodes import DOWN, DRAINING, UP, Nodes, node_id_of
from cellbox.store.db import Database
from cellbox.store.tables import ContainerRow, NodeRow, ResponseRow


def node(db: Database, tmp_path: Path, name: str) -> Nodes:
    return Nodes(db, Settings(data_dir=tmp_path, node_timeout=30, heartbeat_interval=5), f"node_{name}")


def container(cid: str, node_id: str) -> ContainerRow:
    return ContainerRow(id=cid, project="p", name=cid, status="running", created_at=1, last_active_at=1,
                        memory_limit="1g", workspace="/w", expiry_minutes=20, node_id=node_id)


def test_a_data_directory_keeps_one_node_id_even_when_asked_at_once(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: node_id_of(tmp_path), range(32)))
    assert len(ids) == 1
    assert ids == {node_id_of(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["node-id"]  # no temporary file left


async def test_a_silent_node_is_lost_with_its_running_containers_only(db: Database, tmp_path: Path) -> None:
    a, b = node(db, tmp_path, "a"), node(db, tmp_path, "b")
    await a.start(containers=0)
    await b.start(containers=2)
    async with db.session() as session, session.begin():
        session.add_all([container("c1", "node_b"), container("c2", "node_a")])
    assert (await a.sweep(at=now() + 10)).lost == []  # within the timeout
    assert (await b.sweep(at=now() + 3600)).lost == ["node_a"]  # a node never gives itself up; b gives up a
    assert (await a.sweep(at=now() + 3600)).lost == ["node_b"]
    assert (await a.sweep(at=now() + 3600)).lost == []  # once
    async with db.session() as session:
        rows = {r.id: (r.status, r.workspace) for r in (await session.execute(select(ContainerRow))).scalars()}
    assert rows == {"c1": ("expired", None), "c2": ("expired", None)}
    assert await b.beat(containers=0) is True  # b hears it was lost, and is up again
    assert (b.state, (await a.get("node_b")).state) == (UP, UP)  # type: ignore[union-attr]
    assert await b.beat(containers=0) is False


async def test_drain_holds_across_a_restart_until_resumed(db: Database, tmp_path: Path) -> None:
    a = node(db, tmp_path, "a")
    await a.start(containers=0)
    operator = node(db, tmp_path, "other")  # e.g. `cellbox node drain node_a` from another machine
    await operator.set_state("node_a", DRAINING)
    assert a.accepting
    await a.beat(containers=0)
    assert not a.accepting
    await a.start(containers=0)
    assert a.state == DRAINING
    await operator.set_state("node_a", UP)
    await a.beat(containers=0)
    assert a.accepting


async def test_bad_state_changes_are_refused(db: Database, tmp_path: Path) -> None:
    a, b = node(db, tmp_path, "a"), node(db, tmp_path, "b")
    await a.start(containers=0)
    await b.start(containers=0)
    with pytest.raises(NotFound, match="no node node_x"):
        await a.set_state("node_x", DRAINING)
    with pytest.raises(InvalidInput):
        await a.set_state("node_b", DOWN)
    await a.sweep(at=now() + 3600)
    with pytest.raises(InvalidInput, match="is down"):
        await a.set_state("node_b", UP)


async def test_a_node_whose_row_was_removed_reports_again(db: Database, tmp_path: Path) -> None:
    a = node(db, tmp_path, "a")
    await a.start(containers=0)
    async with db.session() as session, session.begin():
        await session.delete(await session.get(NodeRow, "node_a"))
    assert await a.beat(containers=3) is False
    row = await a.get("node_a")
    assert row is not None
    assert (row.state, row.containers) == (UP, 3)


def server(db: Database, tmp_path: Path, name: str, role: str = "all", count: int = 12) -> Nodes:
    token = "t" * 32
    settings = Settings(data_dir=tmp_path, node_timeout=30, heartbeat_interval=5, role=role, sandbox_id_count=count,
                        warm_pool=2, node_token=token, database_url="postgresql://x" if role == "api" else "",
                        blob_url="s3://b" if role == "api" else "")
    return Nodes(db, settings, f"node_{name}")


async def test_creates_spread_to_the_least_loaded_node_counted_at_once(db: Database, tmp_path: Path) -> None:
    a, b, c = (server(db, tmp_path, n) for n in "abc")  # 10 containers each at most
    for n in (a, b, c):
        await n.start(containers=0)
    await a.sweep()
    assert a.peers == 2
    assert await a.place(containers=0) is None  # as little loaded as any: here, no hop
    first, second = await a.place(containers=1), await a.place(containers=1)
    assert first is not None
    assert second is not None
    assert {first[0], second[0]} == {"node_b", "node_c"}  # each counted when chosen, before its heartbeat
    assert await a.place(containers=1) is None  # all at one now: here again
    await b.set_state("node_b", DRAINING)
    await c.beat(containers=10)  # full
    assert await a.place(containers=10) is None  # nowhere better: this node says why it cannot
    alone = server(db, tmp_path, "alone")
    assert await alone.place(containers=0) is None  # no peers swept yet: no lookup at all


async def test_an_api_server_makes_no_container_and_is_forgotten_when_silent(db: Database, tmp_path: Path) -> None:
    api, n = server(db, tmp_path, "api", role="api"), server(db, tmp_path, "n")
    await api.start(containers=0)
    await n.start(containers=0)
    await api.sweep()
    assert not api.takes_more(0)
    assert await api.place(containers=0) == ("node_n", "http://127.0.0.1:8000")
    await n.sweep()
    assert n.peers == 0  # an api server is no place for a container, nor a relay target
    assert await n.place(containers=0) is None
    with pytest.raises(InvalidInput, match="is an api server"):
        await n.set_state("node_api", DRAINING)
    await n.set_state("node_n", DRAINING)
    with pytest.raises(SandboxUnavailable, match="no node has room"):
        await api.place(containers=0)
    assert (await n.sweep(at=now() + 3600)).lost == ["node_api"]
    assert [row.id for row in await n.list()] == ["node_n"]  # its row goes: it keeps nothing
    assert await api.beat(containers=0) is False  # one that was only slow reports for duty again
    assert {row.id: row.role for row in await n.list()} == {"node_n": "all", "node_api": "api"}


async def test_where_a_node_is_comes_from_the_last_sweep_else_the_catalog(db: Database, tmp_path: Path) -> None:
    a, b = node(db, tmp_path, "a"), node(db, tmp_path, "b")
    await a.start(containers=0)
    assert await a.where("node_b") is None
    await b.start(containers=0)
    assert await a.where("node_b") == ("http://127.0.0.1:8000", UP)  # started since the sweep: asked
    await b.set_state("node_b", DRAINING)
    await a.sweep()
    assert a.seen["node_b"] == ("http://127.0.0.1:8000", DRAINING)
    assert await a.where("node_b") == ("http://127.0.0.1:8000", DRAINING)


async def test_servers_placing_at_once_never_overfill_a_node(db: Database, tmp_path: Path) -> None:
    """Each placement counts its container in the same statement that checks the room, so api servers placing
    at the same moment between two heartbeats cannot put more on a node than it holds."""
    apis = [server(db, tmp_path, f"api{i}", role="api") for i in range(4)]
    small, big = server(db, tmp_path, "small", count=5), server(db, tmp_path, "big", count=8)  # room 3 and 6
    for each in (small, big, *apis):
        await each.start(containers=0)
    for api in apis:
        await api.sweep()
    placed = await asyncio.gather(*(api.place(containers=0) for api in apis for _ in range(3)), return_exceptions=True)
    names = [p[0] for p in placed if isinstance(p, tuple)]
    assert len(names) == 9  # all the room there is
    assert (names.count("node_small"), names.count("node_big")) == (3, 6)
    with pytest.raises(SandboxUnavailable, match="no node has room"):
        await apis[0].place(containers=0)
    assert {row.id: row.containers for row in await apis[0].list() if row.role != "api"} == {
        "node_small": 3, "node_big": 6}


async def test_a_sweep_fails_the_lost_servers_responses_and_a_late_finish_keeps_that(
        db: Database, tmp_path: Path) -> None:
    a, b, api = node(db, tmp_path, "a"), node(db, tmp_path, "b"), server(db, tmp_path, "api", role="api")
    for each in (a, b, api):
        await each.start(containers=0)
    on_b, on_api, on_a = History(db, "node_b"), History(db, "node_api"), History(db, "node_a")
    for history, rid in ((on_b, "resp_b"), (on_api, "resp_api"), (on_a, "resp_a")):
        await history.begin("p", {"id": rid, "created_at": 1, "status": "in_progress"}, [])
    async with db.session() as session, session.begin():  # a reported just now: it is kept
        await session.execute(NodeRow.__table__.update().where(NodeRow.id == "node_a").values(
            heartbeat_at=now() + 3600))
    swept = await a.sweep(at=now() + 3600)
    assert (sorted(swept.lost), swept.failed) == (["node_api", "node_b"], 2)
    async with db.session() as session:
        status = {r.id: r.status for r in (await session.execute(select(ResponseRow))).scalars()}
    assert status == {"resp_b": "failed", "resp_api": "failed", "resp_a": "in_progress"}
    # b was only slow: its answer comes after the others gave it up, and the failure stands.
    await on_b.finish("p", {"id": "resp_b", "created_at": 1, "status": "completed", "output": []}, {})
    assert (await on_b.get("p", "resp_b"))["status"] == "failed"
    assert (await a.sweep(at=now() + 3600)).lost == []  # once


class _SlowFiles:
    """A file store whose reads wait until the test lets them go (or the create is cancelled)."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    async def read(self, project: str, fid: str) -> Any:
        self.reading.set()
        await self.go.wait()
        raise NotFound(f"no file {fid}")


class _Node:
    runs_containers = accepting = True


async def test_a_container_being_made_counts_in_the_nodes_load_until_it_is_made_or_fails() -> None:
    """What a node reports in its heartbeat includes the creates still starting, so a create another server
    counted on it is not forgotten at the next beat (and the next create sent to the same node)."""
    files = _SlowFiles()
    containers = Containers(None, [], files, _Node(), "1g", 20)  # type: ignore[arg-type]
    create = asyncio.ensure_future(containers.create("p", CreateContainer(name="x", file_ids=["file-1"])))
    await files.reading.wait()
    assert (containers.live, containers.load) == (0, 1)
    files.go.set()
    with pytest.raises(NotFound):
        await create
    assert containers.load == 0
