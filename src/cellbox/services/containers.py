"""Containers as OpenAI models them: metadata per project, a sandbox while running, container files,
idle expiry, and coming back with their files after a server restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy import RowMapping, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from cellbox.egress.policy import Policy
from cellbox.errors import CellboxError, Expired, InvalidInput, NotFound, SandboxUnavailable
from cellbox.ids import container_file_id, container_id, now
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.events import ChangedFile
from cellbox.sandbox.outside import Outside
from cellbox.sandbox.sandbox import Sandbox
from cellbox.sandbox.workspace import safe_filename
from cellbox.schemas.containers import CreateContainer, EgressUse, NetworkPolicy
from cellbox.services.egress import Egress
from cellbox.services.files import Files
from cellbox.services.metrics import Metrics
from cellbox.services.nodes import DOWN, Nodes
from cellbox.store.db import Database
from cellbox.store.pages import Order, Page, paginate
from cellbox.store.tables import ContainerFileRow, ContainerNetworkRow, ContainerRow, built, columns, values

log = logging.getLogger(__name__)
RUNNING, EXPIRED = "running", "expired"
OWNERS_KEPT = 16384  # containers whose node is remembered for routing

# The lookups every execute and GET makes, built once (building a statement and its cache key cost about half as
# much again as running it; BENCHMARKS.md, stop 8), in Core with the container's allowlist joined.
_CONTAINER = (select(*columns(ContainerRow), *columns(ContainerNetworkRow, "network."))
              .outerjoin(ContainerNetworkRow, ContainerNetworkRow.container_id == ContainerRow.id)
              .where(ContainerRow.id == bindparam("cid"), ContainerRow.project == bindparam("project")))
_CONTAINER_AND_FILE = _CONTAINER.add_columns(*columns(ContainerFileRow, "file.")).outerjoin(
    ContainerFileRow, (ContainerFileRow.container_id == ContainerRow.id) & (ContainerFileRow.id == bindparam("fid")))


def _container(found: RowMapping) -> ContainerRow:
    row = built(ContainerRow, found)
    row.network = built(ContainerNetworkRow, found, "network.") if found["network.container_id"] else None
    return row


_TOUCH = update(ContainerRow).where(ContainerRow.id == bindparam("cid"), ContainerRow.status == RUNNING).values(
    last_active_at=bindparam("at"))
_NODE_OF = select(ContainerRow.node_id).where(ContainerRow.id == bindparam("cid"))


def _is_due(row: ContainerRow, at: int) -> bool:
    return row.status == RUNNING and row.last_active_at + row.expiry_minutes * 60 <= at


class Containers:
    def __init__(self, db: Database, engine: Engine, files: Files, nodes: Nodes, default_memory: str,
                 expiry_minutes: int, metrics: Metrics | None = None, egress: Egress | None = None) -> None:
        self._metrics = metrics or Metrics()
        self._nodes = nodes
        self._creating: set[str] = set()  # sandboxes started whose row is not written yet
        self._starting = 0  # creates whose sandbox is not started yet
        self._owners: dict[str, str] = {}  # container -> its node, for routing; the first read first out
        self._egress = egress
        self._db = db
        self._engine = engine
        self._files = files
        self._default_memory = default_memory if default_memory in ("1g", "4g", "16g", "64g") else "1g"
        self._expiry_minutes = expiry_minutes
        self._lock = asyncio.Lock()  # serialises expiry against use

    @property
    def live(self) -> int:
        """How many containers this node runs now."""
        return sum(1 for _ in self._engine)

    @property
    def load(self) -> int:
        """The containers this node runs, and those it is starting: what it reports and is placed by. A create
        counted on this node by another server stays counted after the next heartbeat, while its sandbox starts."""
        return self.live + self._starting

    # --- lifecycle -------------------------------------------------------------------------------

    async def restore(self) -> None:
        """After a restart: this node's running containers come back on their workspaces, or expire by the usual
        rule. Containers from before nodes existed become this node's first."""
        async with self._db.session() as session, session.begin():
            await session.execute(update(ContainerRow).where(ContainerRow.node_id.is_(None))
                                  .values(node_id=self._nodes.id))
        async with self._db.session() as session:
            rows = list((await session.execute(select(ContainerRow).where(
                ContainerRow.status == RUNNING, ContainerRow.node_id == self._nodes.id))).scalars())
        for row in rows:
            try:
                if _is_due(row, now()) or not row.workspace:
                    raise Expired("idle too long")
                outside = self._restored_outside(row)
                await self._engine.create(memory=row.memory_limit, sandbox_id=row.id, workspace=Path(row.workspace),
                                          outside=outside)
            except CellboxError as exc:
                log.info("container %s does not come back: %s", row.id, exc)
                await self._expire(row.id)
        async with self._db.session() as session:
            kept = {Path(w) for w in (await session.execute(select(ContainerRow.workspace).where(
                ContainerRow.workspace.is_not(None), ContainerRow.node_id == self._nodes.id))).scalars()}
        if pruned := await self._engine.prune_workspaces(kept):
            log.info("deleted %d workspace(s) no container refers to", pruned)

    def _restored_outside(self, row: ContainerRow) -> Outside | None:
        """A container with network access comes back with its allowlist, if this server still permits it; one
        that had secrets does not come back (they were in memory only)."""
        if row.network is None:
            return None
        if row.network.had_secrets:
            raise Expired("its network secrets were held in memory only, and the server restarted")
        policy = self.check_policy(NetworkPolicy(type="allowlist", allowed_domains=row.network.allowed_domains))
        if policy is None or self._egress is None:
            raise Expired("network access is turned off on this server now")
        return self._egress.outside(row.id, policy)

    def check_policy(self, body: NetworkPolicy | None, param: str = "network_policy") -> Policy | None:
        """A create request's network policy, checked (None: no network access, the default)."""
        if self._egress is None:
            if body is not None and body.type != "disabled":
                raise InvalidInput("network access is turned off on this server; use {\"type\": \"disabled\"}",
                                   param)
            return None
        return self._egress.policy(body, param)

    def egress_use(self, cid: str) -> EgressUse | None:
        return self._egress.use(cid) if self._egress is not None else None

    async def create(self, project: str, body: CreateContainer, policy_param: str = "network_policy") -> ContainerRow:
        policy = self.check_policy(body.network_policy, policy_param)
        if body.skills:
            raise InvalidInput("skills are not supported", "skills")
        if not self._nodes.runs_containers:
            raise SandboxUnavailable("this api server runs no containers itself, and no node has room for one")
        if not self._nodes.accepting:
            raise SandboxUnavailable(f"this node ({self._nodes.id}) is {self._nodes.state}: it takes no new "
                                     "containers (`cellbox node resume` puts it back in service)")
        self._starting += 1
        try:
            sources = [await self._files.read(project, fid) for fid in dict.fromkeys(body.file_ids)]
            memory = body.memory_limit or self._default_memory
            box = await self._start(memory, policy)
        finally:
            self._starting -= 1
        self._creating.add(box.id)
        self._metrics.containers_created.inc()
        created = now()
        row = ContainerRow(id=box.id, project=project, name=body.name, status=RUNNING, created_at=created,
                           node_id=self._nodes.id,
                           last_active_at=created, memory_limit=memory, workspace=str(box.workspace.root),
                           expiry_minutes=body.expires_after.minutes if body.expires_after else self._expiry_minutes)
        row.network = None if policy is None else ContainerNetworkRow(  # set either way: never lazily loaded
            container_id=box.id, allowed_domains=policy.domains, had_secrets=bool(policy.secrets))
        try:
            try:
                await self._db.write(lambda c: self._insert(c, row))
            finally:
                self._creating.discard(box.id)
            for source, data in sources:
                await self._put(row, box, source.filename, data)
        except BaseException:
            await self._forget(row.id)
            raise
        return row

    @staticmethod
    def _insert(connection: Connection, row: ContainerRow) -> None:
        connection.execute(insert(ContainerRow.__table__), values(row))
        if row.network is not None:
            connection.execute(insert(ContainerNetworkRow.__table__), values(row.network))

    async def _start(self, memory: str, policy: Policy | None) -> Sandbox:
        if policy is None or self._egress is None:
            return await self._engine.create(memory=memory)
        cid = container_id()
        try:
            return await self._engine.create(memory=memory, sandbox_id=cid, outside=self._egress.outside(cid, policy))
        except BaseException:
            await self._egress.release(cid)
            raise

    async def _forget(self, cid: str) -> None:
        """Rows first: from then on every request for the container is a 404 (never "expired"), and a request
        already using the sandbox fails to register anything for it (NotFound) rather than with a 500."""
        async with self._db.session() as session, session.begin():
            await session.execute(delete(ContainerFileRow).where(ContainerFileRow.container_id == cid))
            await session.execute(delete(ContainerRow).where(ContainerRow.id == cid))
        with contextlib.suppress(NotFound):
            await self._engine.destroy(cid)
        if self._egress is not None:
            await self._egress.release(cid)

    async def delete(self, project: str, cid: str) -> None:
        await self.get(project, cid, touch=False)
        await self._forget(cid)

    async def _expire(self, cid: str) -> None:
        """The sandbox and the workspace's data are discarded; the metadata stays."""
        self._metrics.containers_expired.inc()
        with contextlib.suppress(NotFound):
            await self._engine.destroy(cid)
        if self._egress is not None:
            await self._egress.release(cid)
        async with self._db.session() as session, session.begin():
            await session.execute(update(ContainerRow).where(ContainerRow.id == cid)
                                  .values(status=EXPIRED, workspace=None))

    def _due(self, row: ContainerRow, at: int) -> bool:
        """Idle too long, and not running code now: an execution is activity however long it lasts (its end
        restarts the idle clock, see :meth:`touch`)."""
        if not _is_due(row, at) or row.node_id != self._nodes.id:  # another node's are its own to expire
            return False
        try:
            return not self._engine.get(row.id).busy
        except NotFound:
            return True

    async def expire_due(self) -> int:
        at = now()
        async with self._db.session() as session:
            rows = list((await session.execute(select(ContainerRow).where(
                ContainerRow.status == RUNNING, ContainerRow.node_id == self._nodes.id))).scalars())
        due = [row.id for row in rows if self._due(row, at)]
        async with self._lock:
            for cid in due:
                await self._expire(cid)
        return len(due)

    # --- lookups ---------------------------------------------------------------------------------

    async def get(self, project: str, cid: str, touch: bool = True) -> ContainerRow:
        """A project's container; using it refreshes ``last_active_at`` (an idle one expires first)."""
        found = await self._db.lookup(_CONTAINER, {"cid": cid, "project": project})
        row = _container(found) if found is not None else None
        return await self._in_use(cid, row, touch)

    async def _in_use(self, cid: str, row: ContainerRow | None, touch: bool) -> ContainerRow:
        """The rules of :meth:`get` for a row just read."""
        if row is None:
            raise NotFound(f"Container with id '{cid}' not found.", "container_id")
        if self._due(row, now()):
            async with self._lock:
                await self._expire(cid)
            row.status, row.workspace = EXPIRED, None
        elif touch and row.status == RUNNING and row.last_active_at != now():  # seconds: one write per second
            row.last_active_at = now()
            await self._touch(cid, row.last_active_at)
        return row

    async def touch(self, cid: str, since: int) -> None:
        """An execution that began at ``since`` has ended: the idle clock restarts now (no write when it is the
        same second, the usual case)."""
        if (at := now()) != since:
            await self._touch(cid, at)

    async def _touch(self, cid: str, at: int) -> None:
        await self._db.write(lambda c: c.execute(_TOUCH, {"cid": cid, "at": at}))

    async def list(self, project: str, limit: int, order: Order, after: str | None, name: str | None) -> Page:
        query = select(ContainerRow).where(ContainerRow.project == project)
        if name is not None:
            query = query.where(ContainerRow.name == name)
        async with self._db.session() as session:
            return await paginate(session, query, ContainerRow, limit, order, after)

    async def sandbox(self, project: str, cid: str) -> tuple[ContainerRow, Sandbox]:
        """The running sandbox of a container, or a clear error when it has expired."""
        row = await self.get(project, cid)
        if row.status != RUNNING:
            raise Expired(f"Container {cid} has expired{await self._why(row)}; create a new container (its files "
                          "are gone).")
        try:
            return row, self._engine.get(cid)
        except NotFound:
            await self.get(project, cid, touch=False)  # deleted meanwhile: that is a 404, not "expired"
            why = await self._why(row)
            if row.node_id not in (None, self._nodes.id) and not why:
                node = await self._nodes.get(row.node_id)
                raise SandboxUnavailable(f"Container {cid} runs on node {row.node_id} ({node and node.url}), "
                                         "not on this one; try again") from None
            raise Expired(f"Container {cid} is no longer running{why}; create a new container.") from None

    async def owner_elsewhere(self, cid: str) -> tuple[str, str] | None:
        """(node id, URL) of the live node that runs container ``cid``, when that is another node than this one;
        None when this node should answer (its own, unknown, or its node lost). Any project's: the owner checks."""
        if not self._nodes.peers:
            return None
        node_id = self._owners.get(cid)
        if node_id is None:
            found = await self._db.lookup(_NODE_OF, {"cid": cid})
            node_id = found["node_id"] if found is not None else None
            if node_id is None:
                return None
            self._owners[cid] = node_id  # a container never changes node: no query next time
            while len(self._owners) > OWNERS_KEPT:
                del self._owners[next(iter(self._owners))]
        if node_id == self._nodes.id:
            return None
        node = await self._nodes.where(node_id)
        return (node_id, node[0]) if node is not None and node[1] != DOWN else None

    async def _why(self, row: ContainerRow) -> str:
        """The reason to add to "expired" when the container's node was lost; empty otherwise."""
        if row.node_id in (None, self._nodes.id):
            return ""
        node = await self._nodes.get(row.node_id)
        return f": its node {row.node_id} was lost" if node is None or node.state == DOWN else ""

    async def reconcile(self) -> int:
        """Stop this node's sandboxes that no running container of this node owns any more (deleted through
        another server, or expired while this node was given up for lost). The sandboxes are listed before the
        rows are read, leaving out those whose row is still being written, so a create is never mistaken."""
        listed = {box.id for box in self._engine} - self._creating
        async with self._db.session() as session:
            owned = set((await session.execute(select(ContainerRow.id).where(
                ContainerRow.status == RUNNING, ContainerRow.node_id == self._nodes.id))).scalars())
        stale = listed - owned
        for cid in stale:
            with contextlib.suppress(NotFound):
                await self._engine.destroy(cid)
            if self._egress is not None:
                await self._egress.release(cid)
        return len(stale)

    # --- container files -------------------------------------------------------------------------

    async def _put(self, row: ContainerRow, box: Sandbox, filename: str, data: bytes | BinaryIO) -> ContainerFileRow:
        # Workspace scans and writes are O(files): off the event loop, so other containers' streams keep flowing.
        path = await asyncio.to_thread(self._free_path, box, safe_filename(filename))
        changed = await asyncio.to_thread(box.upload, path, data)
        self._metrics.uploaded(changed.bytes)
        return (await self._register(row.id, [changed], source="user"))[0]

    @staticmethod
    def _free_path(box: Sandbox, name: str) -> str:
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
        candidate, n = f"/mnt/data/{name}", 1
        while box.workspace.exists(candidate):
            candidate, n = f"/mnt/data/{stem}-{n}{suffix}", n + 1
        return candidate

    async def add_upload(self, project: str, cid: str, filename: str, data: bytes | BinaryIO) -> ContainerFileRow:
        row, box = await self.sandbox(project, cid)
        return await self._put(row, box, filename, data)

    async def add_file(self, project: str, cid: str, fid: str) -> ContainerFileRow:
        source, data = await self._files.read(project, fid)
        row, box = await self.sandbox(project, cid)
        return await self._put(row, box, source.filename, data)

    async def add_figure(self, project: str, cid: str, png: bytes) -> ContainerFileRow:
        """A figure the code displayed, kept as a container file named after its own id (as OpenAI does), so an
        answer can cite it and a client can download it."""
        _, box = await self.sandbox(project, cid)
        fid = container_file_id()
        changed = await asyncio.to_thread(box.upload, f"/mnt/data/{fid}.png", png)
        row = ContainerFileRow(id=fid, container_id=cid, path=changed.path, bytes=changed.bytes, source="assistant",
                               created_at=now())
        async with self._db.session() as session, session.begin():
            session.add(row)
        return row

    async def record(self, cid: str, changed: list[ChangedFile], deleted: list[str]) -> list[ContainerFileRow]:
        """After an execution: new or changed files become container files (source 'assistant')."""
        if deleted:
            async with self._db.session() as session, session.begin():
                await session.execute(delete(ContainerFileRow).where(
                    ContainerFileRow.container_id == cid, ContainerFileRow.path.in_(deleted)))
        return await self._register(cid, changed, source="assistant")

    async def _register(self, cid: str, changed: list[ChangedFile], source: str) -> list[ContainerFileRow]:
        if not changed:
            return []
        async with self._db.session() as session, session.begin():
            existing = {r.path: r for r in (await session.execute(select(ContainerFileRow).where(
                ContainerFileRow.container_id == cid,
                ContainerFileRow.path.in_([c.path for c in changed])))).scalars()}
            rows = []
            for item in changed:
                row = existing.get(item.path)
                if row is None:
                    row = ContainerFileRow(id=container_file_id(), container_id=cid, path=item.path,
                                           bytes=item.bytes, source=source, created_at=now())
                    session.add(row)
                else:
                    row.bytes = item.bytes
                rows.append(row)
        return rows

    async def list_files(self, project: str, cid: str, limit: int, order: Order, after: str | None,
                         paths: list[str] | None = None) -> Page:
        """A page of the container's files; with ``paths``, of those at these paths only."""
        await self.get(project, cid)
        query = select(ContainerFileRow).where(ContainerFileRow.container_id == cid)
        if paths:
            query = query.where(ContainerFileRow.path.in_(paths))
        async with self._db.session() as session:
            return await paginate(session, query, ContainerFileRow, limit, order, after)

    async def get_file(self, project: str, cid: str, fid: str) -> ContainerFileRow:
        """A container's file (the container used, as by :meth:`get`): both rows in one query."""
        found = await self._db.lookup(_CONTAINER_AND_FILE, {"cid": cid, "project": project, "fid": fid})
        container = _container(found) if found is not None else None
        row = built(ContainerFileRow, found, "file.") if found is not None and found["file.id"] else None
        await self._in_use(cid, container, touch=True)
        if row is None:
            raise NotFound(f"Container file with id '{fid}' not found.", "file_id")
        return row

    async def open_file(self, project: str, cid: str, fid: str) -> tuple[ContainerFileRow, BinaryIO]:
        row = await self.get_file(project, cid, fid)
        _, box = await self.sandbox(project, cid)
        return row, box.open(row.path)

    async def read_path(self, project: str, cid: str, path: str, limit: int) -> bytes:
        """At most ``limit`` bytes of the registered container file at ``path``."""
        await self.get(project, cid)
        async with self._db.session() as session:
            row = (await session.execute(select(ContainerFileRow).where(
                ContainerFileRow.container_id == cid, ContainerFileRow.path == path))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no file {path} in container {cid}", "path")
        _, box = await self.sandbox(project, cid)

        def read() -> bytes:
            with box.open(row.path) as handle:
                return handle.read(limit)

        return await asyncio.to_thread(read)

    async def delete_file(self, project: str, cid: str, fid: str) -> None:
        row = await self.get_file(project, cid, fid)
        _, box = await self.sandbox(project, cid)
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(box.delete_file, row.path)
        async with self._db.session() as session, session.begin():
            await session.execute(delete(ContainerFileRow).where(ContainerFileRow.id == fid))
