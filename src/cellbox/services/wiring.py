"""Build every service from Settings, start them in order, stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.services.auth import Keys, RateLimiter
from cellbox.services.background import Background
from cellbox.services.cluster import Cluster
from cellbox.services.containers import Containers
from cellbox.services.conversations import Conversations
from cellbox.services.egress import Egress
from cellbox.services.execution import Executions
from cellbox.services.files import Files
from cellbox.services.history import History
from cellbox.services.in_flight import InFlight
from cellbox.services.metrics import Metrics
from cellbox.services.node_pool import NodePool
from cellbox.services.nodes import Nodes, node_id_of
from cellbox.services.remote import RELAYED_PER_PROJECT, Remote
from cellbox.services.responses import Responses
from cellbox.services.upstream import Upstream
from cellbox.store.blobs import BlobStore, LocalBlobs
from cellbox.store.db import Database
from cellbox.store.s3 import S3Blobs

log = logging.getLogger(__name__)


def _blob_store(settings: Settings) -> BlobStore:
    if settings.blob_url:
        return S3Blobs(settings.blob_url, settings.s3_endpoint_url, settings.s3_region)
    return LocalBlobs(settings.data_dir / "files")


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = Database(settings.database)
        self.engine = Engine(settings)
        self.keys = Keys(self.db, open_allowed=settings.loopback_only, node_token=settings.node_token)
        self.rate_limiter = RateLimiter(settings.rate_limit)
        self.metrics = Metrics()
        self.blobs = _blob_store(settings)
        self.files = Files(self.db, self.blobs, settings.max_upload_bytes, self.metrics)
        self.egress = Egress(settings)
        self.nodes = Nodes(self.db, settings, node_id_of(settings.data_dir))
        self.containers = Containers(self.db, self.engine, self.files, self.nodes, settings.memory_limit,
                                     settings.container_expiry_minutes, self.metrics, self.egress)
        self.executions = Executions(self.containers, self.metrics)
        # Requests to other nodes (relayed ones, api/relay.py; the loop's and MCP's, services/remote.py): an
        # execution may take as long as its own timeout, and a lost node is noticed by its heartbeat, not by a
        # read timeout. Each node's connections are bounded, and a request that finds them all in use is answered
        # (503) instead of waiting forever; each project may hold only a share with relayed requests (429 beyond).
        self.node_pool = NodePool()
        self.relayed = InFlight(RELAYED_PER_PROJECT)
        self.cluster = Cluster(self.containers, self.executions, self.nodes,
                               Remote(self.node_pool, self.nodes, settings.node_token, self.relayed))
        self.upstream = Upstream(settings.upstream_base_url, settings.upstream_api_key, settings.aliases,
                                 settings.upstream_timeout, metrics=self.metrics)
        self.metrics.watch(live=lambda: self.containers.live, pool=lambda: self.engine.warm_pool()["ready"])
        self.conversations = Conversations(self.db)
        self.history = History(self.db, self.nodes.id)
        self.responses = Responses(self.history, self.conversations, self.cluster, self.files, self.upstream,
                                   settings.max_tool_calls, settings.timeout, settings.upstream_vision)
        self.background = Background(self.responses, settings.background_limit)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.blobs.start()  # a store that cannot be used fails the start in one line, before anything slow
        if self.settings.database.startswith("postgresql") and not self.settings.blob_url:
            log.warning("the catalog is shared (PostgreSQL) but file bytes stay in this server's data directory: "
                        "a file uploaded here is readable only here; set CELLBOX_BLOB_URL when servers share it")
        await self.db.migrate()
        await self.keys.start(self.settings.api_keys)
        if self.settings.runs_containers:  # an api server has no engine: the nodes run every container
            await self.engine.start()
            await self.egress.start()
        await self.nodes.start(containers=0)
        await self.nodes.sweep()
        if self.settings.runs_containers:
            await self.containers.restore()
        if failed := await self.history.fail_unfinished():
            log.warning("%d response(s) were still running when the server stopped; they are marked failed", failed)
        self._tasks = [asyncio.create_task(self._heartbeat(), name="cellbox-heartbeat")]
        if self.settings.runs_containers:  # an api server's containers are its nodes' to expire
            self._tasks.append(asyncio.create_task(self._reap(), name="cellbox-reaper"))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval)
            try:
                expired = await self.containers.expire_due()
                if expired:
                    log.info("expired %d idle container(s)", expired)
            except Exception:
                log.exception("expiring idle containers failed")

    async def _heartbeat(self) -> None:
        """Report this node's load, watch the other nodes, and stop sandboxes no container owns any more."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self.nodes.beat(containers=self.containers.load)
                await self.nodes.sweep()
                if self.settings.runs_containers and (stopped := await self.containers.reconcile()):
                    log.info("stopped %d sandbox(es) that no container of this node owns any more", stopped)
            except Exception:
                log.exception("the node's heartbeat failed")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.background.aclose()
        await self.responses.aclose()
        await self.upstream.aclose()
        await self.node_pool.aclose()
        await self.engine.aclose(keep_workspaces=True)
        await self.egress.aclose()
        await self.db.aclose()
