"""HTTP/1.1 on asyncio streams through h11, bounded: heads by size and time, every read and write by an idle
timeout, bodies a chunk at a time (a write waits for the peer to take it before the next read)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable
from http import HTTPStatus

import h11

CHUNK = 64 * 1024
MAX_HEAD = 64 * 1024  # request or response line plus headers
LINGER_BYTES = 1024 * 1024  # what a refused client may still send, discarded, before the connection closes
LINGER_SECONDS = 2.0
# Headers about one hop, never forwarded (RFC 9110 7.6.1), with the proxy's own credentials and the client's
# Expect, which the proxy answers itself.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                        b"proxy-authorization", b"te", b"trailer", b"upgrade", b"expect"})

Headers = list[tuple[bytes, bytes]]


class Refusal(Exception):
    """A request the proxy answers itself: its status and a one-line reason for the client and the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Peer:
    """One side of a proxied exchange: h11's state machine over a stream pair.

    ``meter`` sees the size of every read and write (the container's byte budget) and may refuse it.
    """

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, idle_timeout: float,
                 meter: Callable[[int], None] | None = None) -> None:
        self.h11 = h11.Connection(role, max_incomplete_event_size=MAX_HEAD)
        self.reader = reader
        self.writer = writer
        self.idle_timeout = idle_timeout
        self._meter = meter

    async def head(self) -> h11.Event:
        """The next event, which must complete within one idle timeout in all (a slow trickle is cut too)."""
        async with asyncio.timeout(self.idle_timeout):
            return await self.next_event()

    async def next_event(self) -> h11.Event:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            if self.h11.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            async with asyncio.timeout(self.idle_timeout):
                data = await self.reader.read(CHUNK)
            if self._meter is not None:
                self._meter(len(data))
            self.h11.receive_data(data)
        if event is h11.PAUSED:  # never asked for while paused: treat as the peer's fault, not a loop
            raise h11.RemoteProtocolError("data out of turn", error_status_hint=400)
        return event

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if not data:
            return
        if self._meter is not None:
            self._meter(len(data))
        self.writer.write(data)
        async with asyncio.timeout(self.idle_timeout):
            await self.writer.drain()

    @property
    def can_respond(self) -> bool:
        """Whether a response may still start (a server that has not begun one)."""
        return self.h11.our_role is h11.SERVER and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def next_cycle(self) -> bool:
        """Start another exchange on this connection if the last one ended cleanly; whether it could."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE and not self.reader.at_eof():
            self.h11.start_next_cycle()
            return True
        return False

    async def linger(self) -> None:
        """After an answer the peer may not have waited for, stop writing and take what it still sends for a
        moment: closing with its data unread would reset the connection, and the answer with it (RFC 9112 9.6)."""
        if self.writer.can_write_eof():
            self.writer.write_eof()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(LINGER_SECONDS):
                for _ in range(LINGER_BYTES // CHUNK):
                    if not await self.reader.read(CHUNK):
                        return

    def close(self) -> None:
        """Close after what is written has gone out."""
        self.writer.close()

    def abort(self) -> None:
        """Close at once, discarding what is not sent."""
        self.writer.transport.abort()


class Upstream(Peer):
    """The connection to the real host: its failures become the client's 502 or 504, naming the host."""

    def __init__(self, host: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 idle_timeout: float, meter: Callable[[int], None]) -> None:
        super().__init__(h11.CLIENT, reader, writer, idle_timeout, meter)
        self.host = host

    async def next_event(self) -> h11.Event:
        try:
            return await super().next_event()
        except (TimeoutError, OSError, ssl.SSLError, h11.ProtocolError) as exc:
            raise self._translate(exc) from None

    async def send(self, event: h11.Event) -> None:
        try:
            await super().send(event)
        except (TimeoutError, OSError, ssl.SSLError, h11.ProtocolError) as exc:
            raise self._translate(exc) from None

    async def request(self, method: bytes, target: bytes, headers: Headers) -> None:
        try:
            event = h11.Request(method=method, target=target, headers=headers)
        except h11.LocalProtocolError as exc:
            raise self._translate(exc) from None
        await self.send(event)

    def _translate(self, exc: Exception) -> Refusal:
        # Never the exception's text: h11 quotes header values, which may hold a substituted secret.
        if isinstance(exc, TimeoutError):
            return Refusal(504, f"{self.host!r} did not answer within {self.idle_timeout:g} s")
        if isinstance(exc, h11.RemoteProtocolError):
            return Refusal(502, f"{self.host!r} sent a malformed or incomplete HTTP response")
        if isinstance(exc, h11.LocalProtocolError):
            return Refusal(502, f"the request could not be forwarded to {self.host!r} as HTTP/1.1")
        return Refusal(502, f"the connection to {self.host!r} broke")


async def relay_body(source: Peer, sink: Peer) -> None:
    """The body of the message under way, a chunk at a time, then its end (trailers are dropped)."""
    while True:
        event = await source.next_event()
        if isinstance(event, h11.Data):
            await sink.send(h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            await sink.send(h11.EndOfMessage())
            return
        else:
            raise h11.RemoteProtocolError("the connection closed inside a message", error_status_hint=400)


def forwardable(headers: Iterable[tuple[bytes, bytes]], nominated: Iterable[bytes]) -> Headers:
    """The end-to-end headers (original spelling) of a message whose Connection header named ``nominated``."""
    dropped = HOP_BY_HOP | {name.strip().lower() for value in nominated for name in value.split(b",")}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def refusal_events(status: int, text: str) -> list[h11.Event]:
    """A response the proxy gives itself: a one-line text/plain body, and the connection closed after it."""
    body = f"cellbox egress: {text}\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return [h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase.encode()),
            h11.Data(data=body), h11.EndOfMessage()]
