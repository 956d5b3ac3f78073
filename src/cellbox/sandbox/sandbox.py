"""One container: a stateful Python session in its sandbox, its workspace and its cgroup.

Executions run one at a time. A timeout first interrupts the code (KeyboardInterrupt, session kept);
if it does not stop within the grace period, or the session dies (out of memory, os._exit), the
sandbox is killed and started again on the same workspace, and the result says so. What the container sends
arrives checked and bounded (:mod:`.channel`, :mod:`.frames`); a malformed frame is handled like a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from cellbox.errors import SandboxClosed, SandboxFailure
from cellbox.runtime.protocol import EXECUTE
from cellbox.sandbox.cgroups import ContainerGroup, Limits
from cellbox.sandbox.channel import Channel
from cellbox.sandbox.events import ChangedFile, Error, Event, ExecutionResult, Finished, Output, Status
from cellbox.sandbox.frames import Budget, Done, Invalid, frame_ceiling
from cellbox.sandbox.outside import Outside, listen_inside
from cellbox.sandbox.workspace import Scan, Workspace, relative_path

READY_TIMEOUT = 30.0
# The scan after an execution runs on the event loop for a workspace this small (tens of microseconds); one that
# is bigger, or slower to list, is scanned again in a thread, so no tenant holds the loop longer than this.
INLINE_SCAN_ENTRIES = 256
INLINE_SCAN_SECONDS = 0.002
CLOSE_WAIT = 10.0  # seconds close() waits for a running execution to hand back the container after killing it
State = Literal["starting", "ready", "closing", "closed"]
LOST = "the session was restarted: variables are lost, files in /mnt/data are kept."
Spawner = Callable[[], Awaitable[tuple[int, socket.socket]]]
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int
    timeout: float
    interrupt_grace: float
    output_limit: int


def _size(n: int) -> str:
    return f"{n / (1 << 30):g}g" if n % (1 << 30) == 0 else f"{n / (1 << 20):g}m"


class Sandbox:
    """A running container. Create through :class:`cellbox.sandbox.engine.Engine`."""

    def __init__(self, sandbox_id: str, workspace: Workspace, group: ContainerGroup | None,
                 limits: SandboxLimits, spawner: Spawner, outside: Outside | None = None) -> None:
        self.id = sandbox_id
        self.workspace = workspace
        self.limits = limits
        self._group = group
        self._spawn = spawner
        self.outside = outside
        self._pid = 0
        self._channel: Channel | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()  # one execution at a time; close() takes it too
        self._state: State = "starting"
        self._oom_baseline = 0
        self._snapshot = workspace.scan()
        self.restarts = 0

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the session; a container being closed never comes back to life."""
        self._refuse_if_closing()
        self._oom_baseline = self._group.oom_kills() if self._group else 0
        pid, sock = await self._spawn()
        self._pid = pid
        try:
            self._channel = await Channel.connect(sock, self._frame_ceiling)
            problem = await asyncio.wait_for(self._channel.greeting(), READY_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._kill()
            raise SandboxFailure(f"container {self.id} did not become ready: {exc!r}") from exc
        if problem is not None:
            self._kill()
            raise SandboxFailure(f"container {self.id} failed to start: {problem}")
        self._channel.start(f"sandbox-{self.id}")
        if self.outside is not None:
            await self._open_the_way_out(pid, self.outside)
        self._state = "ready"

    async def _open_the_way_out(self, pid: int, outside: Outside) -> None:
        """Before any code runs: the listener in this session's namespace (a new one after each restart)."""
        try:
            listener = await asyncio.to_thread(listen_inside, pid, outside.port)
            await outside.serve(listener)
        except OSError as exc:
            self._kill()
            raise SandboxFailure(f"container {self.id}: its network access could not be set up: {exc}") from exc

    def _refuse_if_closing(self) -> None:
        if self._state in ("closing", "closed"):
            raise SandboxClosed(f"container {self.id} was deleted or has expired")

    def _frame_ceiling(self) -> int:
        return frame_ceiling(self.limits.output_limit)

    def _kill(self) -> None:
        """Destroy the container's processes: killing the init of a pid namespace kills all of it."""
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        if self._channel is not None:
            self._channel.abort()

    async def _stop(self) -> None:
        self._kill()
        if self._channel is not None:
            await self._channel.aclose()
            self._channel = None

    async def restart(self) -> None:
        """Start a fresh session on the same workspace (variables are lost, files are kept)."""
        await self._stop()
        self.restarts += 1
        await self.start()

    async def close(self, keep_workspace: bool = False) -> None:
        """Kill the container for good. Running code is killed first; its execution ends ("the container was
        closed") without restarting anything, and only then are the cgroup and the workspace let go."""
        if self._state == "closed":
            return
        self._state = "closing"
        self._kill()
        with contextlib.suppress(TimeoutError):  # a consumer that stopped reading must not hold the close up
            await asyncio.wait_for(self._lock.acquire(), CLOSE_WAIT)
            self._lock.release()
        await self._stop()
        self._state = "closed"
        if self._group is not None:
            await asyncio.to_thread(self._group.remove)
        if not keep_workspace:
            await asyncio.to_thread(self.workspace.destroy)

    def configure(self, limits: SandboxLimits, group_limits: Limits) -> None:
        """New limits for a container handed out from the warm pool (its cgroup follows at once)."""
        if self._group is not None and group_limits.memory_bytes != self.limits.memory_bytes:
            self._group.apply(group_limits)
        self.limits = limits

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running code (the init forwards SIGINT to the session)."""
        if self.alive and self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGINT)

    @property
    def alive(self) -> bool:
        return self._channel is not None and self._channel.alive

    @property
    def closed(self) -> bool:
        return self._state in ("closing", "closed")

    @property
    def busy(self) -> bool:
        """Code is running, or an execution is waiting its turn: the container is in use, however long it takes."""
        return self._lock.locked() and not self.closed

    @property
    def state(self) -> State:
        return self._state

    @property
    def uid(self) -> int:
        """Host uid the container runs as, its own while it lives (its workspace's owner)."""
        return self.workspace.uid

    @property
    def init_pid(self) -> int:
        """Host pid of the container's init (pid 1 inside)."""
        return self._pid

    # --- execution -------------------------------------------------------------------------------

    async def execute(self, code: str, timeout: float | None = None) -> AsyncIterator[Event]:
        """Run code, yielding outputs as they happen and a final :class:`Finished` event."""
        timeout = timeout or self.limits.timeout
        finished: Finished | None = None
        async with self._lock:
            self._refuse_if_closing()
            if not self.alive:
                await self.restart()
            async for event in self._execute(code, timeout):
                if isinstance(event, Finished):
                    finished = event
                    break
                yield event
        if finished is not None:  # after the lock: whoever receives the result may use the container again
            yield finished

    async def _execute(self, code: str, timeout: float) -> AsyncIterator[Event]:
        assert self._channel is not None
        channel, loop = self._channel, asyncio.get_running_loop()
        request_id = str(next(self._ids))
        budget = Budget(self.limits.output_limit, self.interrupt)
        inbox = channel.subscribe(request_id)
        finished: Finished | None = None
        try:
            channel.send({"type": EXECUTE, "id": request_id, "code": code, "output_limit": self.limits.output_limit})
            deadline, timed_out = loop.time() + timeout, False
            while finished is None:
                try:
                    async with asyncio.timeout_at(deadline):  # no task per frame, as wait_for would make
                        frame = await inbox.get()
                except TimeoutError:
                    if not timed_out:
                        timed_out, deadline = True, loop.time() + self.limits.interrupt_grace
                        self.interrupt()
                        continue
                    finished = await self._recover("timeout", f"Execution timed out after {timeout:g} s and did not "
                                                   f"stop within {self.limits.interrupt_grace:g} s of the interrupt")
                    yield Error("TimeoutError", finished.message or "", [])
                    break
                if frame is None or isinstance(frame.event, Invalid):
                    status, cause, ename = self._lost(None if frame is None else frame.event)
                    finished = await self._recover(status, cause)
                    yield Error(ename, finished.message or "", [])
                elif isinstance(frame.event, Done):
                    finished = self._done(frame.event, timed_out, timeout, budget)
                else:
                    for output in budget.take(frame.event, frame.size):
                        yield output
        finally:
            channel.unsubscribe(inbox)
            if finished is None:  # the caller stopped listening: stop the code too
                self.interrupt()
        yield await self._with_files(finished)

    def _done(self, done: Done, timed_out: bool, timeout: float, budget: Budget) -> Finished:
        status: Status = {"ok": "ok", "error": "error"}.get(done.status, "timeout" if timed_out else "error")
        message = None
        if status == "timeout":
            message = f"Execution timed out after {timeout:g} s and was interrupted; the session is intact."
        elif budget.exceeded is not None:
            message = f"The output was truncated ({budget.exceeded}) and the code interrupted; the session is intact."
        return Finished(status, done.execution_count, [], message=message)

    def _lost(self, invalid: Invalid | None) -> tuple[Status, str, str]:
        """Status, cause and error name for a session that sent a malformed frame or is gone."""
        if invalid is not None:
            _log.warning("container %s sent a malformed message (%s); restarting it", self.id, invalid.reason)
            return "crashed", f"The session sent a malformed message ({invalid.reason})", "SessionCrashed"
        if self._oom_happened():
            limit = _size(self.limits.memory_bytes)
            return "out_of_memory", f"The code ran out of memory (limit {limit})", "MemoryError"
        return "crashed", "The Python session exited", "SessionCrashed"

    def _oom_happened(self) -> bool:
        return self._group is not None and self._group.oom_kills() > self._oom_baseline

    async def _recover(self, status: Status, cause: str) -> Finished:
        """Kill the session and start a fresh one on the same workspace, unless the container is being closed."""
        if self.closed:
            return Finished("crashed", None, [], message="The container was deleted or expired while the code ran.")
        try:
            await self.restart()
        except SandboxFailure as exc:  # the code did run: its answer is this result, never an error to retry
            _log.warning("container %s: no new session after a crash: %s", self.id, exc)
            return Finished(status, None, [], message=f"{cause}; a new session could not be started ({exc}). "
                                                      "The next execution tries again; files are kept.")
        return Finished(status, None, [], restarted=True, message=f"{cause}; {LOST}")

    async def _with_files(self, finished: Finished) -> Finished:
        after = self.workspace.scan(INLINE_SCAN_ENTRIES, INLINE_SCAN_SECONDS)  # the usual one: no hop to a thread
        if after.limit is not None:
            after = await asyncio.to_thread(self.workspace.scan)
        diff = Workspace.diff(self._snapshot, after)
        self._snapshot = after
        message = " ".join(filter(None, [finished.message, *diff.notes])) or None
        return Finished(finished.status, finished.execution_count, diff.changed, finished.restarted, message,
                        diff.deleted)

    async def run(self, code: str, timeout: float | None = None) -> ExecutionResult:
        """Run code and collect everything it produced."""
        outputs: list[Output] = []
        async for event in self.execute(code, timeout):
            if isinstance(event, Finished):
                return ExecutionResult(outputs, event.status, event.execution_count, event.files,
                                       event.restarted, event.message, event.deleted)
            outputs.append(event)
        raise SandboxFailure("execution ended without a result")  # pragma: no cover

    # --- files and stats -------------------------------------------------------------------------

    def upload(self, path: str, data: bytes | BinaryIO) -> ChangedFile:
        """Put a file into /mnt/data (not reported as changed by the next execution). Only this file's entry of
        the snapshot changes: what a running execution wrote meanwhile is still reported by it."""
        changed = self.workspace.write(path, data)
        if (state := self.workspace.state(changed.path)) is not None:
            self._snapshot.files[str(relative_path(changed.path))] = state
        return changed

    def download(self, path: str) -> bytes:
        return self.workspace.read(path)

    def open(self, path: str) -> BinaryIO:
        return self.workspace.open(path)

    def delete_file(self, path: str) -> None:
        self.workspace.delete(path)
        self._snapshot.files.pop(str(relative_path(path)), None)

    def files(self) -> list[ChangedFile]:
        """Every registrable file in the workspace now."""
        return Workspace.diff(Scan({}), self.workspace.scan()).changed

    def stats(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "memory_bytes": self._group.memory_bytes() if self._group else None,
            "memory_limit_bytes": self.limits.memory_bytes,
            "pids": self._group.pids() if self._group else None,
            "restarts": self.restarts,
            "workspace_bytes": self.workspace.usage(),
        }
