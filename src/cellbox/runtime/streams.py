"""Captured output: Python-level ``sys.stdout``/``sys.stderr`` and fd-level output of subprocesses and C code.

Text is buffered and flushed as one ``stream`` event per run of same-stream text, at most every
``FLUSH_INTERVAL`` while code runs (so long jobs stream live) and always at the end of an execution.
Output beyond the per-execution cap is dropped and replaced by a visible marker.
"""

from __future__ import annotations

import codecs
import io
import os
import select
import signal
import socket
import threading
from collections.abc import Callable

from cellbox.runtime.protocol import STREAM, Message, encode

FLUSH_INTERVAL = 0.05
FLUSH_BYTES = 64 * 1024


class Outbox:
    """Sends frames from any thread; SIGINT is held off while a frame is on the wire so none is torn."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        data = encode(message)
        main = threading.current_thread() is threading.main_thread()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if main else None
        try:
            with self._lock:
                self._sock.sendall(data)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)


class StreamSink:
    """Per-execution output buffer with a byte budget, shared by stdout, stderr and the fd pump."""

    def __init__(self, send: Callable[[Message], None], limit: int) -> None:
        self._send = send
        self._default_limit = self._limit = limit
        self._lock = threading.RLock()
        self._segments: list[list[str]] = []
        self._buffered = 0
        self._request_id: str | None = None
        self._used = 0
        self._dropped = 0

    def begin(self, request_id: str, limit: int | None = None) -> None:
        with self._lock:
            self._request_id = request_id
            self._limit = limit or self._default_limit
            self._used = self._dropped = 0

    def write(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._request_id is None:
                return  # output between executions has no request to belong to
            text = self._within_budget(text)
            if not text:
                return
            if self._segments and self._segments[-1][0] == name:
                self._segments[-1][1] += text
            else:
                self._segments.append([name, text])
            self._buffered += len(text)
            if self._buffered >= FLUSH_BYTES:
                self.flush()

    def _within_budget(self, text: str) -> str:
        data = text.encode("utf-8", "replace")  # lone surrogates become '?' here, not a broken frame later
        room = self._limit - self._used
        if len(data) <= room:
            self._used += len(data)
            return data.decode("utf-8")
        kept = data[: max(room, 0)].decode("utf-8", "ignore")
        self._used = self._limit
        self._dropped += len(data) - len(kept.encode())
        return kept

    def flush(self) -> None:
        with self._lock:
            segments, self._segments, self._buffered = self._segments, [], 0
            for name, text in segments:
                self._send({"type": STREAM, "id": self._request_id, "name": name, "text": text})

    def end(self) -> None:
        """Flush what is left, add the truncation marker if output was dropped, stop accepting output."""
        with self._lock:
            if self._dropped:
                marker = f"\n[output truncated: {self._dropped} more bytes beyond the {self._limit}-byte limit]\n"
                self._segments.append(["stderr", marker])
            self.flush()
            self._request_id = None


class OutputStream(io.TextIOBase):
    """Replacement for sys.stdout / sys.stderr that feeds the sink."""

    def __init__(self, name: str, sink: StreamSink, fd: int) -> None:
        self.name = name
        self._sink = sink
        self._fd = fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # the captured fd, so subprocess(stdout=sys.stdout) is captured too

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._sink.write(self.name, text)
        return len(text)

    def flush(self) -> None:
        pass  # the sink flushes on its own schedule and at the end of each execution


class FdPump:
    """Moves what subprocesses and C code write to fds 1 and 2 into the sink, and flushes it periodically."""

    def __init__(self, sink: StreamSink) -> None:
        self._sink = sink
        self._pipes: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._active = False
        self._drained = threading.Event()
        self._drain_requested = False

    def capture(self) -> None:
        """Point fds 1 and 2 at pipes read by a daemon thread."""
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._pipes[read_end] = (name, codecs.getincrementaldecoder("utf-8")("replace"))
        threading.Thread(target=self._run, name="cellbox-output", daemon=True).start()

    def set_active(self, active: bool) -> None:
        self._active = active
        os.write(self._wake_w, b"w")

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until everything already written to fds 1 and 2 reached the sink."""
        self._drained.clear()
        self._drain_requested = True
        os.write(self._wake_w, b"d")
        self._drained.wait(timeout)

    def _run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        fds = [*self._pipes, self._wake_r]
        while True:
            readable, _, _ = select.select(fds, [], [], FLUSH_INTERVAL if self._active else None)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            for fd in readable:
                if fd != self._wake_r:
                    self._read_available(fd)
            if self._drain_requested:
                for fd in self._pipes:
                    self._read_available(fd)
                self._drain_requested = False
                self._drained.set()
            elif self._active:
                self._sink.flush()

    def _read_available(self, fd: int) -> None:
        name, decoder = self._pipes[fd]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._sink.write(name, decoder.decode(chunk))
