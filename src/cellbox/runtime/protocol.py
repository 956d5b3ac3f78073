"""Framed messages between host and sandbox: a 4-byte big-endian length, then one JSON object.

Shared by both sides, so stdlib only. Requests carry an ``id``; every event the runtime sends carries the
``id`` of the request that caused it and a ``type``; every execution ends with a ``done`` event.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024

# Requests (host -> runtime)
EXECUTE = "execute"
# Events (runtime -> host)
READY = "ready"
STREAM = "stream"
DISPLAY = "display"
RESULT = "result"
ERROR = "error"
DONE = "done"
FATAL = "fatal"

Message = dict[str, Any]


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: Message) -> bytes:
    """Lone surrogates (``print("\\udcff")``) become '?' rather than breaking the channel."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> Message:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame is not an object with a 'type'")
    return message


def parse_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit")
    return length


def recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """Blocking read of exactly ``size`` bytes; None on a clean EOF before the first byte."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            if chunks:
                raise ProtocolError("connection closed inside a frame")
            return None
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket) -> Message | None:
    """Blocking read of one message; None when the peer closed the connection."""
    header = recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    body = recv_exactly(sock, parse_length(header))
    if body is None:
        raise ProtocolError("connection closed inside a frame")
    return decode(body)
