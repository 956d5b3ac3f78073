"""Host side of the forkserver: start it with a clean environment, ask it for containers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from cellbox.errors import SandboxFailure, SandboxUnavailable

STARTUP_TIMEOUT = 180.0
MAX_CONTROL_MESSAGE = 1 << 20


class Zygote:
    """The warm template process. Spawn requests are sent one at a time but overlap in the template: one reader
    task hands each reply to the spawn waiting for its id."""

    def __init__(self, python: Path, state_dir: Path, preload: list[str], seccomp: bytes, lifeline: int) -> None:
        self._python = python
        self._lifeline = lifeline
        self._state_dir = state_dir
        self._preload = preload
        self._seccomp = seccomp
        self._process: asyncio.subprocess.Process | None = None
        self._ctrl: socket.socket | None = None
        self._send_lock = asyncio.Lock()
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._replies: asyncio.Task[None] | None = None
        self._gone = False
        self.failed_preloads: list[str] = []

    @staticmethod
    def _environment() -> dict[str, str]:
        """Nothing from the server's environment (keys, tokens) may reach the template, and no host path either:
        every container's init keeps this block in its memory. The cache directories arrive by the control socket."""
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "JE_ARROW_MALLOC_CONF": "background_thread:false",  # pyarrow would start a thread before we fork
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }

    @property
    def log_path(self) -> Path:
        """What the template itself writes to stderr (its own failures, never container output)."""
        return self._state_dir / "template.log"

    async def start(self) -> None:
        """Start the template in a session of its own, with no terminal: code forked from it must never reach the
        operator's terminal (no controlling tty, no inherited tty descriptor, not in the server's process group)."""
        cache = self._state_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(self.log_path, "wb") as log:
                self._process = await asyncio.create_subprocess_exec(
                    str(self._python), "-m", "cellbox.sandbox.zygote", str(theirs.fileno()), str(self._lifeline),
                    pass_fds=(theirs.fileno(), self._lifeline), env=self._environment(), cwd="/",
                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=log,
                    start_new_session=True,
                )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._ctrl = ours
        config = {"seccomp": base64.b64encode(self._seccomp).decode(), "preload": self._preload,
                  "cache": str(cache)}
        ours.send(json.dumps(config).encode())
        try:
            reply = await asyncio.wait_for(self._receive(), STARTUP_TIMEOUT)
        except (TimeoutError, SandboxFailure) as exc:
            await self.aclose()
            what = f"no answer within {STARTUP_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else str(exc)
            raise SandboxUnavailable(f"the sandbox template did not start ({what}){self._log_tail()}") from exc
        self.failed_preloads = reply.get("failed_preloads", [])
        self._replies = asyncio.create_task(self._read_replies(), name="cellbox-template-replies")

    async def _read_replies(self) -> None:
        """Until the template exits: each reply to the spawn waiting for it (a spawn that gave up waiting has
        no entry, and its container exits by itself: its channel is closed)."""
        try:
            while True:
                reply = await self._receive()
                waiter = self._waiting.pop(reply.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
        except SandboxFailure as exc:
            self._lost(exc)
        except (OSError, ValueError) as exc:  # a broken socket, or a reply that is not JSON
            self._lost(SandboxFailure(f"the sandbox template failed: {exc}"))

    def _log_tail(self, size: int = 2000) -> str:
        try:
            text = self.log_path.read_bytes()[-size:].decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; its last words: {text}" if text else ""

    async def _receive(self) -> dict[str, Any]:
        assert self._ctrl is not None
        data = await asyncio.get_running_loop().sock_recv(self._ctrl, MAX_CONTROL_MESSAGE)
        if not data:
            self._lost()
            raise SandboxFailure("the sandbox template exited")
        message: dict[str, Any] = json.loads(data)
        return message

    async def _send_with_fd(self, payload: bytes, fd: int) -> None:
        assert self._ctrl is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self._ctrl, [payload], [fd])
                return
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(self._ctrl, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(self._ctrl)

    async def spawn(self, spec: dict[str, Any]) -> tuple[int, socket.socket]:
        """Start a container; return the host pid of its init and the host end of its channel."""
        if self._ctrl is None or self._gone:
            raise SandboxFailure("the sandbox template is not running")
        host_end, sandbox_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._next_id += 1
        request_id = self._next_id
        answer = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        try:
            async with self._send_lock:
                if self._gone:
                    raise SandboxFailure("the sandbox template exited")
                request = {"type": "spawn", "id": request_id, "spec": spec}
                try:
                    await self._send_with_fd(json.dumps(request).encode(), sandbox_end.fileno())
                except (BrokenPipeError, ConnectionResetError):
                    self._lost()
                    raise SandboxFailure("the sandbox template exited") from None
            sandbox_end.close()
            reply = await answer
        except BaseException:
            self._waiting.pop(request_id, None)
            host_end.close()
            sandbox_end.close()
            raise
        if reply.get("type") != "spawned":
            host_end.close()
            raise SandboxFailure(f"could not start a container: {reply.get('message')}")
        return int(reply["pid"]), host_end

    def _lost(self, failure: SandboxFailure | None = None) -> None:
        """The template is gone, whether or not its exit status has been collected yet (on a busy machine the
        child watcher reaps it late): from now on ``running`` is False, and every spawn still waiting fails."""
        self._gone = True
        failure = failure or SandboxFailure("the sandbox template exited")
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(failure)
        self._waiting.clear()
        if self._replies is not None and self._replies is not asyncio.current_task():
            self._replies.cancel()  # it closes nothing: the socket is closed by aclose(), after the reader is done

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None and not self._gone

    async def aclose(self) -> None:
        self._lost(SandboxFailure("the sandbox template is shutting down"))
        if self._replies is not None:
            self._replies.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replies
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if self._process is not None and self._process.returncode is None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._process.pid, 9)
                await self._process.wait()
