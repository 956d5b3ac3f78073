"""The channel's reader, over a socketpair: routing by request, frames skipped or refused, a bounded inbox."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from cellbox.runtime.protocol import HEADER, MAX_FRAME, encode
from cellbox.sandbox.channel import INBOX_BYTES, Channel, Inbox
from cellbox.sandbox.events import Stream
from cellbox.sandbox.frames import Done, Frame, Invalid, Oversize

CEILING = 1000


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Channel, socket.socket]]:
    host, peer = socket.socketpair()
    channel = await Channel.connect(host, lambda: CEILING)
    yield channel, peer
    await channel.aclose()
    peer.close()


def stream(request_id: str | None, text: str) -> bytes:
    return encode({"type": "stream", "id": request_id, "name": "stdout", "text": text})


async def test_frames_of_the_current_request_arrive_in_order(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    inbox = channel.subscribe("2")
    channel.start("test")
    peer.sendall(stream("1", "stale") + stream(None, "between") + stream("2", "a")
                 + encode({"type": "done", "id": "2", "status": "ok", "execution_count": 1}))
    first, done = await inbox.get(), await inbox.get()
    assert first is not None
    assert first.event == Stream("stdout", "a")
    assert done is not None
    assert done.event == Done("ok", 1)


async def test_a_frame_over_the_ceiling_is_skipped_and_reading_goes_on(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    inbox = channel.subscribe("1")
    channel.start("test")
    big = stream("1", "x" * 5000)
    peer.sendall(big + stream("1", "after"))
    assert await inbox.get() == Frame(None, Oversize(len(big) - HEADER.size, CEILING), len(big) - HEADER.size)
    after = await inbox.get()
    assert after is not None
    assert after.event == Stream("stdout", "after")
    assert channel.alive


async def test_an_impossible_header_ends_the_reading(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    inbox = channel.subscribe("1")
    channel.start("test")
    peer.sendall(HEADER.pack(MAX_FRAME + 1))
    frame = await inbox.get()
    assert frame is not None
    assert isinstance(frame.event, Invalid)
    assert await inbox.get() is None
    assert not channel.alive


async def test_a_malformed_frame_for_another_request_still_ends_the_current_one(
        pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    inbox = channel.subscribe("2")
    channel.start("test")
    peer.sendall(encode({"type": "stream", "id": "1"}) + stream("2", "never read"))
    frame = await inbox.get()
    assert frame is not None
    assert isinstance(frame.event, Invalid)
    assert await inbox.get() is None


async def test_a_malformed_frame_between_requests_ends_the_channel(pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    channel.start("test")
    peer.sendall(HEADER.pack(5) + b"hello")
    first = channel.subscribe("1")
    while (await first.get()) is not None:  # subscribed before or after the reader stopped: it ends either way
        pass
    assert not channel.alive
    assert await channel.subscribe("2").get() is None  # a request after the end is told at once


async def test_closing_does_not_wait_for_a_reader_blocked_on_a_full_inbox(
        pair: tuple[Channel, socket.socket]) -> None:
    channel, peer = pair
    inbox = channel.subscribe("1")
    channel.start("test")
    chunk = stream("1", "x" * 900)
    peer.setblocking(False)
    # Far more than the inbox and the socket buffers hold: the sender can only finish if somebody reads.
    sender = asyncio.create_task(asyncio.get_running_loop().sock_sendall(peer, chunk * (8 * INBOX_BYTES // 900)))
    await inbox.get()
    await channel.aclose()
    assert not channel.alive
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError, OSError):
        await sender


async def test_the_inbox_makes_the_reader_wait_while_it_is_full() -> None:
    inbox = Inbox("1")
    frame = Frame("1", Stream("stdout", "x"), INBOX_BYTES // 2)
    await inbox.put(frame)
    await inbox.put(frame)
    blocked = asyncio.create_task(inbox.put(frame))
    await asyncio.sleep(0)  # one turn of the loop: the put cannot finish until there is room
    assert not blocked.done()
    assert await inbox.get() == frame
    await blocked
    inbox.end()  # the last word never waits for room
    assert [await inbox.get() for _ in range(3)] == [frame, frame, None]


async def test_a_released_inbox_never_keeps_the_reader_waiting() -> None:
    inbox = Inbox("1")
    frame = Frame("1", Stream("stdout", "x"), INBOX_BYTES)
    await inbox.put(frame)
    blocked = asyncio.create_task(inbox.put(frame))
    await asyncio.sleep(0)
    inbox.release()
    await blocked
