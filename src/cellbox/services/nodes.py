"""Nodes: each server that runs containers reports itself in the shared database.

A node's row says where it is, how loaded it is, and when it last reported (its heartbeat). Every node also
watches the others: one whose heartbeat is older than ``node_timeout`` is lost, so it is marked down and its
containers expire, saying why. A draining node takes no new containers and lets its own expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import bindparam, delete, select, update

from cellbox import __version__
from cellbox.config import Settings
from cellbox.errors import InvalidInput, NotFound, SandboxUnavailable
from cellbox.ids import now
from cellbox.services.history import LOST_WHY, fail
from cellbox.store.db import Database
from cellbox.store.tables import ContainerRow, NodeRow, ResponseRow

log = logging.getLogger(__name__)
UP, DRAINING, DOWN = "up", "draining", "down"
NODE_ID_FILE = "node-id"
T = TypeVar("T")
PLACE_TRIES = 3  # nodes tried for one create when others fill them first
_CLAIM = update(NodeRow).where(NodeRow.id == bindparam("node"), NodeRow.state == UP,
                               NodeRow.containers < NodeRow.max_containers).values(containers=NodeRow.containers + 1)


@dataclass(frozen=True)
class Swept:
    """What a sweep gave up: the servers' ids, and how many of their responses it failed."""

    lost: list[str]
    failed: int


class NodeLost(Exception):
    """The node a request was waiting on was marked down meanwhile."""


def node_id_of(data_dir: Path) -> str:
    """This data directory's node id, made on first use: the same node across restarts, so its containers come
    back to it."""
    path = data_dir / NODE_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    temp = data_dir / f".{NODE_ID_FILE}.{secrets.token_hex(4)}"
    temp.write_text("node_" + secrets.token_hex(8) + "\n")
    try:
        os.link(temp, path)  # atomic, and never over an id another process just made
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_text().strip()


def memory_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


class Nodes:
    def __init__(self, db: Database, settings: Settings, node_id: str) -> None:
        self._db = db
        self._url = settings.advertised_url
        self._timeout = settings.node_timeout
        self._interval = settings.heartbeat_interval
        self.role = settings.role
        self.runs_containers = settings.runs_containers
        self._max_containers = settings.sandbox_id_count - settings.warm_pool if self.runs_containers else 0
        self.id = node_id
        self.state = UP
        self.peers = 0  # other nodes not down, as of the last sweep: none means nothing to route
        self._placing = asyncio.Lock()
        self.seen: dict[str, tuple[str, str]] = {}  # every server's (URL, state) as of the last sweep

    @property
    def accepting(self) -> bool:
        return self.state == UP

    async def start(self, containers: int) -> None:
        """Report for duty: up again after a restart or a loss, but still draining if an operator drained it."""
        async with self._db.session() as session, session.begin():
            row = await session.get(NodeRow, self.id)
            if row is None:
                row = NodeRow(id=self.id)
                session.add(row)
            self.state = DRAINING if row.state == DRAINING else UP
            row.url, row.state, row.version, row.started_at, row.role = (self._url, self.state, __version__, now(),
                                                                         self.role)
            row.heartbeat_at, row.containers = now(), containers
            row.max_containers, row.memory_available = self._max_containers, memory_available()

    async def beat(self, containers: int) -> bool:
        """Report this node's load; learn its state (an operator may have drained it). True when another node had
        given it up for lost meanwhile: its containers have expired, and it is up again."""
        async with self._db.session() as session, session.begin():
            row = await session.get(NodeRow, self.id)
            if row is not None:
                lost = row.state == DOWN
                self.state = UP if lost else row.state
                row.state, row.heartbeat_at, row.containers = self.state, now(), containers
                row.memory_available = memory_available()
        if row is None:  # an operator removed its row: it reports for duty again
            await self.start(containers)
            return False
        if lost:
            log.warning("node %s had been given up for lost (no heartbeat for %ss); its containers expired",
                        self.id, self._timeout)
        return lost

    async def sweep(self, at: int | None = None) -> Swept:
        """Give up every other server silent for longer than the timeout, in one transaction: a node is marked
        down and its containers expire; an api server's row goes (it keeps nothing, and comes back under a new
        name); the responses either was running end failed. A server that reported meanwhile is kept: each change
        checks the heartbeat again."""
        deadline = (now() if at is None else at) - self._timeout
        silent = (NodeRow.state != DOWN) & (NodeRow.heartbeat_at < deadline) & (NodeRow.id != self.id)
        async with self._db.session() as session, session.begin():
            nodes = list((await session.execute(update(NodeRow).where(silent, NodeRow.role != "api").values(
                state=DOWN).returning(NodeRow.id))).scalars())
            if nodes:
                await session.execute(update(ContainerRow).where(
                    ContainerRow.node_id.in_(nodes), ContainerRow.status == "running").values(
                    status="expired", workspace=None))
            api = list((await session.execute(delete(NodeRow).where(silent, NodeRow.role == "api").returning(
                NodeRow.id))).scalars())
            failed = await fail(session, ResponseRow.node_id.in_(nodes + api), LOST_WHY) if nodes or api else 0
            rows = (await session.execute(select(NodeRow.id, NodeRow.url, NodeRow.state, NodeRow.role))).all()
        self.seen = {row.id: (row.url, row.state) for row in rows}
        self.peers = sum(1 for row in rows if row.state != DOWN and row.id != self.id and row.role != "api")
        for node_id in nodes:
            log.warning("node %s sent no heartbeat for %ss: marked down, its containers expired", node_id,
                        self._timeout)
        for node_id in api:
            log.warning("api server %s sent no heartbeat for %ss: forgotten", node_id, self._timeout)
        if failed:
            log.warning("%d response(s) were running on a server that was lost; they are marked failed", failed)
        return Swept(nodes + api, failed)

    async def until_down(self, node_id: str) -> None:
        """Return once ``node_id`` is marked down (as the sweeps see it, every heartbeat interval): what a request
        relayed to it waits on besides its answer, so a node that vanishes without closing its connections hangs
        nothing."""
        while True:
            await asyncio.sleep(self._interval)
            node = await self.where(node_id)  # as of the last sweep: no query per waiting request
            if node is None or node[1] == DOWN:
                return

    async def unless_lost(self, node_id: str, work: Awaitable[T]) -> T:
        """``work``'s result, unless ``node_id`` is marked down first: then ``work`` is cancelled and NodeLost
        raised. What every request to another node waits on, so one that vanishes without closing its
        connections hangs nothing."""
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self.until_down(node_id))
        try:
            done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller went away, or the server is stopping
            task.cancel()
            raise
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise NodeLost(node_id)

    def takes_more(self, containers: int) -> bool:
        """Whether this node may make the next container itself (a node, up, and below its capacity)."""
        return self.runs_containers and self.accepting and containers < self._max_containers

    async def place(self, containers: int) -> tuple[str, str] | None:
        """Where the next container goes: None for this node (which holds ``containers`` now), else (id, URL) of
        the live node with the most room, when it has more than this one. A node alone makes its own, or says why
        it cannot; an api server, which makes none, says so when no node has room."""
        here = self.takes_more(containers)
        if self.runs_containers and not self.peers:
            return None
        async with self._placing:  # this server's creates choose one at a time, each seeing the last one's count
            for _ in range(PLACE_TRIES):
                best = await self._roomiest()
                if best is None or (here and containers / self._max_containers <= best[2]):
                    break
                if await self._claim(best[0]):
                    return best[0], best[1]
        if self.runs_containers:
            return None
        raise SandboxUnavailable("no node has room for a new container: every node is draining, full or down "
                                 "(`cellbox node ls` shows them)")

    async def _claim(self, node_id: str) -> bool:
        """Count one more container on ``node_id`` at once, if it still has room and is up: the creates that
        arrive between two heartbeats spread too, and servers placing at the same moment cannot overfill a node
        (the condition and the count are one statement). The next heartbeat reports the true count."""
        return bool(await self._db.write(lambda c: c.execute(_CLAIM, {"node": node_id}).rowcount))

    async def _roomiest(self) -> tuple[str, str, float] | None:
        """(id, URL, load) of the live node with the most room, other than this one: up, heard from within the
        timeout, below its capacity; the least loaded first (containers for its capacity), then the one with the
        most memory free."""
        load = NodeRow.containers * 1.0 / NodeRow.max_containers
        async with self._db.session() as session:
            row = (await session.execute(select(NodeRow.id, NodeRow.url, load.label("load")).where(
                NodeRow.state == UP, NodeRow.id != self.id, NodeRow.heartbeat_at >= now() - self._timeout,
                NodeRow.role != "api", NodeRow.containers < NodeRow.max_containers).order_by(
                load, NodeRow.memory_available.desc()).limit(1))).first()
        return (row.id, row.url, float(row.load)) if row is not None else None

    async def where(self, node_id: str) -> tuple[str, str] | None:
        """A node's (URL, state): as of the last sweep (at most a heartbeat old, and no query on a request's way),
        else as the catalog says now (a node that started since)."""
        if (known := self.seen.get(node_id)) is not None:
            return known
        row = await self.get(node_id)
        return (row.url, row.state) if row is not None else None

    async def get(self, node_id: str) -> NodeRow | None:
        async with self._db.session() as session:
            return await session.get(NodeRow, node_id)

    async def list(self) -> list[NodeRow]:
        async with self._db.session() as session:
            return list((await session.execute(select(NodeRow).order_by(NodeRow.started_at))).scalars())

    async def set_state(self, node_id: str, state: str) -> NodeRow:
        """Drain a node (no new containers) or put it back in service; a running node notices at its next
        heartbeat. A node that is down comes back only by starting again."""
        if state not in (UP, DRAINING):
            raise InvalidInput(f"a node's state can be set to {UP} or {DRAINING}", "state")
        async with self._db.session() as session, session.begin():
            row = await session.get(NodeRow, node_id)
            if row is None:
                raise NotFound(f"no node {node_id}: `cellbox node ls` lists them", "node_id")
            if row.state == DOWN:
                raise InvalidInput(f"node {node_id} is down; it comes back up when it starts again", "node_id")
            if row.role == "api":
                raise InvalidInput(f"{node_id} is an api server: it runs no containers to drain", "node_id")
            row.state = state
        if node_id == self.id:
            self.state = state
        return row
