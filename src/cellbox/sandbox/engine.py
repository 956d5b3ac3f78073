"""The engine: checks the host can isolate, owns the warm template and every container.

    async with Engine(settings) as engine:
        box = await engine.create(memory="1g")
        box.upload("data.csv", b"a,b\\n1,2\\n")
        result = await box.run("import pandas as pd; pd.read_csv('data.csv')")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from cellbox.config import Settings, parse_size
from cellbox.errors import InvalidInput, NotFound, SandboxFailure, SandboxUnavailable
from cellbox.ids import container_id
from cellbox.sandbox.cgroups import Cgroups, Limits
from cellbox.sandbox.environment import sandbox_environment
from cellbox.sandbox.identities import Identities
from cellbox.sandbox.launcher import Zygote
from cellbox.sandbox.outside import Outside
from cellbox.sandbox.sandbox import Sandbox, SandboxLimits
from cellbox.sandbox.seccomp import SOCKET_FAMILY_NAMES, build_filter
from cellbox.sandbox.volumes import Volumes
from cellbox.sandbox.workspace import Workspace

SYSTEM_READ_ONLY = ("/usr", "/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime", "/etc/ssl",
                    "/etc/fonts", "/etc/mime.types")
SHM_SIZE = 64 << 20
log = logging.getLogger(__name__)
REFILL_DELAY = 0.05
NAMESPACES = ["mount", "pid", "network", "ipc", "uts", "cgroup", "user"]


def _read_only_paths(python: Path) -> list[str]:
    """System directories plus the sandbox Python's installation, without nesting."""
    prefixes = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
                os.path.realpath(python.parent.parent)}
    paths: list[str] = []
    for path in sorted({*SYSTEM_READ_ONLY, *prefixes}):
        if os.path.exists(path) and not any(path.startswith(p + "/") for p in paths):
            paths.append(path)
    return paths


class Engine:
    """Creates, finds and destroys containers. Use as an async context manager."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._data_dir = self.settings.data_dir.resolve()
        self._state_dir = self._data_dir / "state"
        self._sandboxes: dict[str, Sandbox] = {}
        self._starting: set[str] = set()  # ids being started for a request
        self._no_requests_starting = asyncio.Event()  # the warm pool refills only then
        self._no_requests_starting.set()
        self._template_lock = asyncio.Lock()
        self._cgroups: Cgroups | None = None
        self._zygote: Zygote | None = None
        self._volumes: Volumes | None = None
        self._identities = Identities(self.settings.sandbox_uid, self.settings.sandbox_gid,
                                      self.settings.sandbox_id_count)
        self._held: dict[Path, int] = {}  # slots of workspaces kept from before, until they come back or go
        self._read_only: list[str] = []
        self._lifeline: tuple[int, int] | None = None  # containers die when its write end closes
        self._warm: list[Sandbox] = []
        self._dead: list[Sandbox] = []
        self._closing = False
        self._warming: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # --- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Check isolation is possible, then start the warm template; raises SandboxUnavailable."""
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "Cellbox's sandbox must start as root: it creates mount, pid, network, ipc and uts namespaces "
                "and cgroups for every container, then drops each one to an unprivileged uid with no "
                "capabilities. Run it as root (for example in a VM or a privileged container)."
            )
        self._identities.check_host()
        for directory in (self._data_dir, self._state_dir, self._state_dir / "rootfs", self.workspaces_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.settings.sandbox_cgroups == "on":
            self._cgroups = Cgroups.detect()
            self._cgroups.prepare()
        if self.settings.sandbox_disk_quota == "on":
            self._volumes = Volumes(self.workspaces_dir, self.settings.disk_quota_bytes)
        self._read_only = _read_only_paths(self.settings.sandbox_python)
        self._lifeline = os.pipe()
        self._zygote = self._new_zygote()
        try:
            if self._volumes is not None:
                await self._volumes.start()
            await self._hold_kept_workspaces()
            await self._zygote.start()
            await self._self_test()
            self._refill_warm()
        except BaseException:
            await self.aclose()
            raise

    async def _hold_kept_workspaces(self) -> None:
        """Keep for each workspace kept from before the uid that owns it, so no new container takes it before the
        workspace's own container comes back (it then needs no change of owner)."""
        for root in await self._kept_workspaces():
            if (slot := self._reserve_owner(root)) is not None:
                self._held[root] = slot

    async def _kept_workspaces(self) -> list[Path]:
        if self._volumes is None:
            with os.scandir(self.workspaces_dir) as entries:
                return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        roots = []
        for mount_point in self._volumes.claimed():
            try:
                roots.append(await self._volumes.attach(mount_point))
            except OSError as exc:  # its container will not come back either, and says why
                log.warning("cannot mount the kept workspace %s: %s", mount_point.name, exc)
        return roots

    def _new_zygote(self) -> Zygote:
        assert self._lifeline is not None
        return Zygote(self.settings.sandbox_python, self._state_dir, self.settings.preload, build_filter(),
                      lifeline=self._lifeline[0])

    async def _self_test(self) -> None:
        try:
            probe = await self.create()
        except SandboxFailure as exc:
            raise SandboxUnavailable(f"this host cannot start an isolated container: {exc}") from exc
        await self.destroy(probe.id)

    async def aclose(self, keep_workspaces: bool = False) -> None:
        """Stop every container and the template. Workspaces are deleted unless ``keep_workspaces``
        (a server keeps them, to bring its containers back with their files after a restart)."""
        self._closing = True
        self._no_requests_starting.set()  # a refill waiting for requests to finish gives up instead
        if self._warming is not None:  # a container being started finishes, then is discarded below
            with contextlib.suppress(Exception):
                await self._warming
        warm, self._warm, self._dead = self._warm + self._dead, [], []
        await asyncio.gather(*(self._discard(box) for box in warm), return_exceptions=True)
        stop = self.stop if keep_workspaces else self.destroy
        await asyncio.gather(*(stop(box.id) for box in list(self._sandboxes.values())), return_exceptions=True)
        if self._volumes is not None:
            await self._volumes.aclose()
            self._volumes = None
        if self._zygote is not None:
            await self._zygote.aclose()
            self._zygote = None
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.close)
            self._cgroups = None
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None

    # --- containers ----------------------------------------------------------------------------

    @property
    def workspaces_dir(self) -> Path:
        return self._data_dir / "workspaces"

    def isolation(self) -> dict[str, Any]:
        """Which isolation layers are active, for /health and `cellbox run --json`."""
        cgroups = self._cgroups.version if self._cgroups else "off (weaker: no memory, pids or cpu limits)"
        quota = (f"{self.settings.disk_quota} per workspace (a filesystem of its own)" if self._volumes
                 else "off (weaker: workspaces can fill the host disk)")
        return {
            "mode": "strict" if self._cgroups and self._volumes else "degraded",
            "namespaces": NAMESPACES,
            "seccomp": True,
            "no_new_privs": True,
            "capabilities": "none",
            "network": "loopback only (own namespace)",
            "socket_families": list(SOCKET_FAMILY_NAMES),
            "terminal": "none (a session of its own, no controlling tty)",
            "init": "not dumpable",
            "cgroups": cgroups,
            "disk_quota": quota,
            **self._identities.describe(),
        }

    async def create(self, memory: str | int | None = None, sandbox_id: str | None = None,
                     timeout: float | None = None, workspace: Path | None = None,
                     outside: Outside | None = None) -> Sandbox:
        """Start a container with an empty workspace, or on ``workspace``, one this engine's data directory
        kept from before a restart (the files come back, the Python state does not). A new container without a
        chosen id comes from the warm pool when one is ready, unless it has a way ``outside`` (its variables
        and files are set when it starts)."""
        if self._zygote is None:
            raise SandboxFailure("the engine is not started")
        memory_bytes = parse_size(memory, "memory limit") if memory is not None else self.settings.memory_bytes
        if memory_bytes < 64 << 20:
            raise InvalidInput("memory limit must be at least 64m", "memory_limit")
        if sandbox_id is None and workspace is None and outside is None and \
                (box := self._claim_warm(memory_bytes, timeout)):
            return box
        sandbox_id = sandbox_id or container_id()
        if sandbox_id in self._sandboxes or sandbox_id in self._starting:
            raise InvalidInput(f"container {sandbox_id} already exists", "id")
        if workspace is not None and any(box.workspace.root == workspace for box in self._sandboxes.values()):
            raise InvalidInput(f"the workspace {workspace.name} is in use by a running container", "workspace")
        self._starting.add(sandbox_id)  # reserved before the first await: two restores of one id never both start
        self._no_requests_starting.clear()
        try:
            box = await self._start_box(sandbox_id, memory_bytes, timeout, workspace, outside)
        finally:
            self._starting.discard(sandbox_id)
            if not self._starting:
                self._no_requests_starting.set()
        self._hand_out(box)
        return box

    def _hand_out(self, box: Sandbox) -> None:
        if self._volumes is not None:
            self._volumes.claim(box.workspace.root)
        self._sandboxes[box.id] = box

    async def prune_workspaces(self, keep: set[Path]) -> int:
        """Delete kept workspaces no container refers to any more (left by a crash mid-create or mid-delete)."""
        for root in [root for root in self._held if root not in keep]:
            self._identities.release(self._held.pop(root))
        if self._volumes is None:
            return 0
        orphans = [p for p in self._volumes.claimed() if p not in keep and p not in
                   {box.workspace.root for box in self._sandboxes.values()}]
        for path in orphans:
            await self._volumes.release(path)
        return len(orphans)

    def _limits(self, memory_bytes: int, timeout: float | None) -> SandboxLimits:
        return SandboxLimits(memory_bytes, timeout or self.settings.timeout, self.settings.interrupt_grace,
                             self.settings.output_limit)

    async def _start_box(self, sandbox_id: str, memory_bytes: int, timeout: float | None,
                         existing: Path | None, outside: Outside | None = None, *, warm: bool = False) -> Sandbox:
        slot = self._identities.take() if existing is None else None
        try:
            root = await self._workspace_root(sandbox_id, existing)
        except BaseException:
            if slot is not None:
                self._identities.release(slot)
            raise
        slot = self._slot_for(root) if slot is None else slot
        workspace = Workspace(root, self._identities.uid(slot), self._identities.gid(slot))
        group = None
        try:
            if existing is None:
                workspace.create()
            else:
                await self._adopt(workspace)
            if self._cgroups is not None:
                limits = Limits(memory_bytes, self.settings.pids_limit, self.settings.cpus)
                group = self._cgroups.create(sandbox_id, limits)
        except BaseException:
            await self._release_workspace(workspace)
            self._identities.release(slot)
            raise
        box = Sandbox(sandbox_id, workspace, group, self._limits(memory_bytes, timeout),
                      spawner=lambda: self._spawn(workspace, group.procs_files if group else [], outside, warm),
                      outside=outside)
        try:
            await box.start()
        except BaseException:
            await box.close(keep_workspace=True)
            await self._release_workspace(workspace)
            self._identities.release(slot)
            raise
        return box

    # --- identities: one host uid and gid per live container ----------------------------------------

    def _slot_for(self, root: Path) -> int:
        """A kept workspace keeps the uid that owns it when that uid is in range and free, else gets a new one."""
        slot = self._held.pop(root, None)
        if slot is None:
            slot = self._reserve_owner(root)
        return self._identities.take() if slot is None else slot

    def _reserve_owner(self, root: Path) -> int | None:
        """The slot of the uid and gid owning a workspace, if they are in range and free (now taken)."""
        try:
            info = os.lstat(root)
        except OSError:
            return None
        slot = self._identities.slot(info.st_uid, info.st_gid)
        return slot if slot is not None and self._identities.reserve(slot) else None

    @staticmethod
    async def _adopt(workspace: Workspace) -> None:
        try:
            await asyncio.to_thread(workspace.adopt)
        except OSError as exc:
            raise SandboxFailure(f"cannot give the workspace {workspace.root.name} to its new uid: {exc}") from exc

    def _give_back(self, workspace: Workspace) -> None:
        """The container is stopped: its uid may go to the next one."""
        self._identities.release(workspace.uid - self._identities.first_uid)

    # --- the warm pool: containers started ahead of demand, limits applied when handed out --------

    def _claim_warm(self, memory_bytes: int, timeout: float | None) -> Sandbox | None:
        while self._warm:
            box = self._warm.pop()
            if not box.alive:
                self._dead.append(box)  # the refill task cleans it up
                continue
            box.configure(self._limits(memory_bytes, timeout),
                          Limits(memory_bytes, self.settings.pids_limit, self.settings.cpus))
            self._hand_out(box)
            self._refill_warm()
            return box
        self._refill_warm()
        return None

    def warm_pool(self) -> dict[str, int]:
        """How many containers are started ahead of demand, of how many wanted."""
        return {"ready": len(self._warm), "size": self.settings.warm_pool}

    async def warmed(self) -> None:
        """Wait for refills under way (containers, then volumes), so tests and benchmarks start steady."""
        while True:
            pending = [task for task in (self._warming, self._volumes and self._volumes.filling())
                       if task is not None and not task.done()]
            if not pending:
                return
            await asyncio.wait(pending)

    def _refill_warm(self) -> None:
        if self.settings.warm_pool and not self._closing and (self._warming is None or self._warming.done()):
            self._warming = asyncio.create_task(self._fill_warm(), name="cellbox-warm-pool")

    async def _fill_warm(self) -> None:
        """Top the pool up, yielding to creates that had to start their own container: during a burst a refill
        would only take CPU and template time from requests already waiting; it resumes when they are done."""
        await asyncio.sleep(REFILL_DELAY)  # let the request that emptied a slot finish before competing for CPU
        while self._dead:
            await self._discard(self._dead.pop())
        while not self._closing and self._zygote is not None and len(self._warm) < self.settings.warm_pool:
            await self._no_requests_starting.wait()
            if self._closing:
                return
            try:
                box = await self._start_box(container_id(), self.settings.memory_bytes, None, None, warm=True)
            except Exception:
                log.exception("could not start a warm container")
                return
            self._warm.append(box)

    async def _discard(self, box: Sandbox) -> None:
        await box.close(keep_workspace=True)
        await self._release_workspace(box.workspace)
        self._give_back(box.workspace)

    async def _workspace_root(self, sandbox_id: str, existing: Path | None) -> Path:
        if existing is None:
            return await self._volumes.take() if self._volumes else self.workspaces_dir / sandbox_id
        if existing.parent != self.workspaces_dir:
            raise InvalidInput(f"{existing} is not a workspace of this engine", "workspace")
        if self._volumes is not None:
            try:
                return await self._volumes.attach(existing)
            except OSError as exc:
                raise NotFound(f"the workspace {existing.name} is gone: {exc}") from exc
        return existing

    async def _release_workspace(self, workspace: Workspace) -> None:
        if self._volumes is not None:
            await self._volumes.release(workspace.root)
        else:
            await asyncio.to_thread(workspace.destroy)

    async def _spawn(self, workspace: Workspace, procs_files: list[str], outside: Outside | None = None,
                     warm: bool = False) -> Any:
        """``warm``: the session runs a first cell before it is ready (``Executor.warm_up``). Only for the warm
        pool, which waits anyway: a create that forks its own container in a burst would take that CPU from
        the other creates waiting (create p99 under 50 clients rose by a third when every container did it)."""
        assert self._zygote is not None
        python_bin = str(self.settings.sandbox_python.parent)
        spec = {
            "root": str(self._state_dir / "rootfs"),
            "workspace": str(workspace.root),
            "ro_binds": self._read_only,
            "hostname": "sandbox",
            "uid": workspace.uid,
            "gid": workspace.gid,
            "tmp_size": self.settings.tmp_bytes,
            "shm_size": SHM_SIZE,
            "rlimits": {"NOFILE": self.settings.open_files, "FSIZE": self.settings.disk_quota_bytes, "CORE": 0},
            "cgroup_procs": procs_files,
            "env": {**sandbox_environment(python_bin), **(outside.env if outside else {})},
            "files": outside.files if outside else {},
            "warm": warm,
        }
        template = await self._template()
        try:
            return await template.spawn(spec)
        except SandboxFailure:
            if template.running:
                raise
            return await (await self._template()).spawn(spec)  # it died under us: once more, on a new one

    async def _template(self) -> Zygote:
        """The running template; the one place that replaces a dead one (killed from outside: the OOM killer, an
        operator). Under the lock, so concurrent spawns never start two and orphan one."""
        async with self._template_lock:
            assert self._zygote is not None
            if not self._zygote.running:
                log.warning("the sandbox template exited; starting a new one")
                await self._zygote.aclose()
                self._zygote = self._new_zygote()
                await self._zygote.start()
            return self._zygote

    def get(self, sandbox_id: str) -> Sandbox:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFound(f"no such container: {sandbox_id}") from None

    def __iter__(self) -> Any:
        return iter(list(self._sandboxes.values()))

    async def stop(self, sandbox_id: str) -> None:
        """Stop a container's processes but keep its workspace for a later ``create(workspace=...)``."""
        box = self._sandboxes.pop(sandbox_id, None)
        if box is None:
            raise NotFound(f"no such container: {sandbox_id}")
        await box.close(keep_workspace=True)
        self._give_back(box.workspace)
        if self._volumes is not None:
            await self._volumes.detach(box.workspace.root)

    async def destroy(self, sandbox_id: str) -> None:
        """Stop a container and delete its workspace."""
        box = self._sandboxes.pop(sandbox_id, None)
        if box is None:
            raise NotFound(f"no such container: {sandbox_id}")
        await box.close(keep_workspace=True)
        self._give_back(box.workspace)
        await self._release_workspace(box.workspace)
