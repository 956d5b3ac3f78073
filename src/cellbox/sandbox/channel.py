"""The host's end of a container's channel: requests out, and frames in through the checks of :mod:`frames`.

One reader task per session reads every frame. It never holds more than one frame under the ceiling: a larger
one is skipped as it arrives, and a malformed one ends the reading, since the channel can no longer be trusted.
Frames of the current request wait in a small inbox; while it is full the reader stops reading, so the socket
pushes back on the container instead of the server buffering for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from cellbox.runtime.protocol import HEADER, Message, ProtocolError, encode, parse_length
from cellbox.sandbox import frames
from cellbox.sandbox.frames import Frame, Invalid, Oversize

INBOX_BYTES = 1 << 20  # frames waiting for a slow consumer before the reader stops reading
SKIP_CHUNK = 1 << 20


class Inbox:
    """The frames of one request, in order, then ``None`` when the channel ended."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()  # bounded by _room, not by maxsize
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, frame: Frame) -> None:
        await self._room.wait()
        self._frames.put_nowait(frame)
        self._queued += frame.size
        if self._queued >= INBOX_BYTES:
            self._room.clear()

    def end(self) -> None:
        self._frames.put_nowait(None)  # always room for the last word, so the reader never waits on it

    def release(self) -> None:
        """Nobody reads this inbox any more: never keep the reader waiting for room in it."""
        self._room.set()

    async def get(self) -> Frame | None:
        frame = await self._frames.get()
        if frame is not None:
            self._queued -= frame.size
            if self._queued < INBOX_BYTES:
                self._room.set()
        return frame


class Channel:
    """Framed messages over a container's socket, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 ceiling: Callable[[], int]) -> None:
        self._reader = reader
        self._writer = writer
        self._ceiling = ceiling
        self._inbox: Inbox | None = None
        self._task: asyncio.Task[None] | None = None
        self.alive = True

    @classmethod
    async def connect(cls, sock: socket.socket, ceiling: Callable[[], int]) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer, ceiling)

    async def greeting(self) -> str | None:
        """Wait for the runtime's first frame: None when it is ready, else why the container did not start."""
        first = await self._read()
        if first is None:
            return "it exited during setup"
        return frames.greeting(first) if isinstance(first, bytes) else "its first message was malformed"

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._run(), name=name)

    def send(self, message: Message) -> None:
        self._writer.write(encode(message))

    def subscribe(self, request_id: str) -> Inbox:
        """The inbox for the frames that answer ``request_id`` (frames of other requests are dropped)."""
        self._inbox = inbox = Inbox(request_id)
        if not self.alive:
            inbox.end()
        return inbox

    def unsubscribe(self, inbox: Inbox) -> None:
        if self._inbox is inbox:
            self._inbox = None
        inbox.release()

    def abort(self) -> None:
        """Stop talking: close our end (the reader then stops at once, or at EOF)."""
        self.alive = False
        self._writer.close()

    async def aclose(self) -> None:
        self.abort()
        if self._task is not None:
            self._task.cancel()  # it may be waiting for room in an inbox nobody reads any more
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> bytes | Frame | None:
        """One frame's body; a Frame for one that is too big or impossible; None on a clean EOF."""
        try:
            header = await self._reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        try:
            size = parse_length(header)  # the runtime's own limit: no frame it sends can be larger
        except ProtocolError as exc:
            return Frame(None, Invalid(str(exc)), 0)
        if size > (ceiling := self._ceiling()):
            await self._skip(size)
            return Frame(None, Oversize(size, ceiling), size)
        return await self._reader.readexactly(size)

    async def _skip(self, size: int) -> None:
        while size:
            chunk = await self._reader.read(min(size, SKIP_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(chunk)

    async def _run(self) -> None:
        try:
            while (body := await self._read()) is not None:
                frame = frames.parse(body) if isinstance(body, bytes) else body
                inbox = self._inbox  # a frame too big or malformed to name its request belongs to the current one
                if inbox is not None and (frame.id == inbox.request_id or isinstance(frame.event, Invalid | Oversize)):
                    await inbox.put(frame)
                if isinstance(frame.event, Invalid):
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.alive = False
            if self._inbox is not None:
                self._inbox.end()
