"""Nodes: each server that runs containers reports itself in the shared database.

A node's row says where it is, how loaded it is, and when it last reported (its heartbeat). Every node also
watches the others: one whose heartbeat is older than ``node_timeout`` is lost, so it is marked down and its
containers expire, saying why. A draining node takes no new containers and lets its own expire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy import func, select, update

from cellbox import __version__
from cellbox.config import Settings
from cellbox.errors import InvalidInput, NotFound
from cellbox.ids import now
from cellbox.store.db import Database
from cellbox.store.tables import ContainerRow, NodeRow

log = logging.getLogger(__name__)
UP, DRAINING, DOWN = "up", "draining", "down"
NODE_ID_FILE = "node-id"


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
        self._max_containers = settings.sandbox_id_count - settings.warm_pool
        self._interval = settings.heartbeat_interval
        self.id = node_id
        self.state = UP
        self.peers = 0  # other nodes not down, as of the last sweep: none means nothing to route

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
            row.url, row.state, row.version, row.started_at = self._url, self.state, __version__, now()
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

    async def sweep(self, at: int | None = None) -> list[str]:
        """Mark down every other node silent for longer than the timeout, and expire its containers."""
        deadline = (now() if at is None else at) - self._timeout
        async with self._db.session() as session, session.begin():
            lost = list((await session.execute(select(NodeRow.id).where(
                NodeRow.state != DOWN, NodeRow.heartbeat_at < deadline, NodeRow.id != self.id))).scalars())
            if lost:
                await session.execute(update(NodeRow).where(NodeRow.id.in_(lost)).values(state=DOWN))
                await session.execute(update(ContainerRow).where(
                    ContainerRow.node_id.in_(lost), ContainerRow.status == "running").values(
                    status="expired", workspace=None))
            self.peers = int((await session.execute(select(func.count()).select_from(NodeRow).where(
                NodeRow.state != DOWN, NodeRow.id != self.id))).scalar_one())
        for node in lost:
            log.warning("node %s sent no heartbeat for %ss: marked down, its containers expired", node, self._timeout)
        return lost

    async def until_down(self, node_id: str) -> None:
        """Return once ``node_id`` is marked down (checked every heartbeat interval): what a request relayed to
        it waits on besides its answer, so a node that vanishes without closing its connections hangs nothing."""
        while True:
            await asyncio.sleep(self._interval)
            node = await self.get(node_id)
            if node is None or node.state == DOWN:
                return

    def takes_more(self, containers: int) -> bool:
        """Whether this node should make the next container itself (up, and below its capacity)."""
        return self.accepting and containers < self._max_containers

    async def elsewhere(self) -> tuple[str, str] | None:
        """(id, URL) of the live node with the most room for a new container, other than this one: up, heard from
        within the timeout, below its capacity; the least loaded first, then the one with the most memory free."""
        load = NodeRow.containers * 1.0 / NodeRow.max_containers
        async with self._db.session() as session:
            row = (await session.execute(select(NodeRow.id, NodeRow.url).where(
                NodeRow.state == UP, NodeRow.id != self.id, NodeRow.heartbeat_at >= now() - self._timeout,
                NodeRow.containers < NodeRow.max_containers).order_by(
                load, NodeRow.memory_available.desc()).limit(1))).first()
        return (row.id, row.url) if row is not None else None

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
            row.state = state
        if node_id == self.id:
            self.state = state
        return row
