"""One container: a stateful Python session in its sandbox, its workspace and its cgroup.

Executions run one at a time. A timeout first interrupts the code (KeyboardInterrupt, session kept);
if it does not stop within the grace period, or the session dies (out of memory, os._exit), the
sandbox is killed and started again on the same workspace, and the result says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from cellbox.errors import SandboxFailure
from cellbox.runtime.protocol import (
    DISPLAY,
    DONE,
    ERROR,
    EXECUTE,
    FATAL,
    HEADER,
    READY,
    RESULT,
    STREAM,
    Message,
    decode,
    encode,
    parse_length,
)
from cellbox.sandbox.cgroups import ContainerGroup, Limits
from cellbox.sandbox.events import (
    ChangedFile,
    Display,
    Error,
    Event,
    ExecutionResult,
    Finished,
    Output,
    Result,
    Status,
    Stream,
)
from cellbox.sandbox.workspace import Workspace

READY_TIMEOUT = 30.0
Spawner = Callable[[], Awaitable[tuple[int, socket.socket]]]
_DIED = object()


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int
    timeout: float
    interrupt_grace: float
    output_limit: int


def _output(frame: Message) -> Output | None:
    kind = frame["type"]
    if kind == STREAM:
        return Stream(frame["name"], frame["text"])
    if kind == DISPLAY:
        return Display(frame["data"], frame.get("metadata") or {})
    if kind == RESULT:
        return Result(frame["data"], frame.get("metadata") or {})
    if kind == ERROR:
        return Error(frame["ename"], frame["evalue"], frame["traceback"])
    return None


def _size(n: int) -> str:
    return f"{n / (1 << 30):g}g" if n % (1 << 30) == 0 else f"{n / (1 << 20):g}m"


class Sandbox:
    """A running container. Create through :class:`cellbox.sandbox.engine.Engine`."""

    def __init__(self, sandbox_id: str, workspace: Workspace, group: ContainerGroup | None,
                 limits: SandboxLimits, spawner: Spawner) -> None:
        self.id = sandbox_id
        self.workspace = workspace
        self.limits = limits
        self._group = group
        self._spawn = spawner
        self._pid = 0
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._alive = False
        self._closed = False
        self._oom_baseline = 0
        self._snapshot = workspace.scan()
        self.restarts = 0

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._oom_baseline = self._group.oom_kills() if self._group else 0
        pid, sock = await self._spawn()
        self._pid = pid
        try:
            reader, self._writer = await asyncio.open_unix_connection(sock=sock)
            first = await asyncio.wait_for(self._read_frame(reader), READY_TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            self._kill()
            raise SandboxFailure(f"container {self.id} did not become ready: {exc!r}") from exc
        if first is None or first["type"] != READY:
            self._kill()
            detail = first.get("message") if first and first["type"] == FATAL else "it exited during setup"
            raise SandboxFailure(f"container {self.id} failed to start: {detail}")
        self._alive = True
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"sandbox-{self.id}")

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> Message | None:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        return decode(await reader.readexactly(parse_length(header)))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while (frame := await self._read_frame(reader)) is not None:
                queue = self._pending.get(str(frame.get("id")))
                if queue is not None:
                    queue.put_nowait(frame)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._alive = False
            for queue in self._pending.values():
                queue.put_nowait(_DIED)

    def _kill(self) -> None:
        """Destroy the container's processes: killing the init of a pid namespace kills all of it."""
        self._alive = False
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _stop(self) -> None:
        self._kill()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None

    async def restart(self) -> None:
        """Start a fresh session on the same workspace (variables are lost, files are kept)."""
        await self._stop()
        self.restarts += 1
        await self.start()

    async def close(self, keep_workspace: bool = False) -> None:
        self._closed = True
        await self._stop()
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
        if self._alive and self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGINT)

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def closed(self) -> bool:
        return self._closed

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
        async with self._lock:
            if self._closed:
                raise SandboxFailure(f"container {self.id} is closed")
            if not self._alive:
                await self.restart()
            async for event in self._execute(code, timeout):
                yield event

    async def _execute(self, code: str, timeout: float) -> AsyncIterator[Event]:
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        request_id = str(next(self._ids))
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[request_id] = queue
        finished: Finished | None = None
        try:
            self._writer.write(encode({"type": EXECUTE, "id": request_id, "code": code,
                                       "output_limit": self.limits.output_limit}))
            deadline, timed_out = loop.time() + timeout, False
            while finished is None:
                try:
                    frame = await asyncio.wait_for(queue.get(), max(deadline - loop.time(), 0))
                except TimeoutError:
                    if not timed_out:
                        timed_out, deadline = True, loop.time() + self.limits.interrupt_grace
                        self.interrupt()
                        continue
                    finished = await self._recover("timeout", timeout)
                    yield Error("TimeoutError", finished.message or "", [])
                    break
                if frame is _DIED:
                    status: Status = "out_of_memory" if self._oom_happened() else "crashed"
                    finished = await self._recover(status, timeout)
                    yield Error("MemoryError" if status == "out_of_memory" else "SessionCrashed",
                                finished.message or "", [])
                elif frame["type"] == DONE:
                    finished = self._done(frame, timed_out, timeout)
                elif (output := _output(frame)) is not None:
                    yield output
        finally:
            self._pending.pop(request_id, None)
            if finished is None:  # the caller stopped listening: stop the code too
                self.interrupt()
        yield await self._with_files(finished)

    def _done(self, frame: Message, timed_out: bool, timeout: float) -> Finished:
        status: Status = {"ok": "ok", "error": "error"}.get(frame["status"], "timeout" if timed_out else "error")
        message = None
        if status == "timeout":
            message = f"Execution timed out after {timeout:g} s and was interrupted; the session is intact."
        return Finished(status, frame.get("execution_count"), [], message=message)

    def _oom_happened(self) -> bool:
        return self._group is not None and self._group.oom_kills() > self._oom_baseline

    async def _recover(self, status: Status, timeout: float) -> Finished:
        lost = "the session was restarted: variables are lost, files in /mnt/data are kept."
        message = {
            "timeout": f"Execution timed out after {timeout:g} s and did not stop within "
                       f"{self.limits.interrupt_grace:g} s of the interrupt; {lost}",
            "out_of_memory": f"The code ran out of memory (limit {_size(self.limits.memory_bytes)}); {lost}",
            "crashed": f"The Python session exited; {lost}",
        }[status]
        await self.restart()
        return Finished(status, None, [], restarted=True, message=message)

    async def _with_files(self, finished: Finished) -> Finished:
        after = await asyncio.to_thread(self.workspace.scan)
        files = self.workspace.changes(self._snapshot, after)
        deleted = self.workspace.removed(self._snapshot, after)
        self._snapshot = after
        return Finished(finished.status, finished.execution_count, files, finished.restarted, finished.message,
                        deleted)

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
        """Put a file into /mnt/data (not reported as changed by the next execution)."""
        changed = self.workspace.write(path, data)
        self._snapshot = self.workspace.scan()
        return changed

    def download(self, path: str) -> bytes:
        return self.workspace.read(path)

    def open(self, path: str) -> BinaryIO:
        return self.workspace.open(path)

    def delete_file(self, path: str) -> None:
        self.workspace.delete(path)
        self._snapshot = self.workspace.scan()

    def files(self) -> list[ChangedFile]:
        return self.workspace.changes({}, self.workspace.scan())

    def stats(self) -> dict[str, Any]:
        return {
            "alive": self._alive,
            "memory_bytes": self._group.memory_bytes() if self._group else None,
            "memory_limit_bytes": self.limits.memory_bytes,
            "pids": self._group.pids() if self._group else None,
            "restarts": self.restarts,
            "workspace_bytes": self.workspace.usage(),
        }
