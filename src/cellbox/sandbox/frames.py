"""The host's trust boundary: every frame a container sends is checked and bounded here before anything reads it.

User code shares a process with the runtime, so it can write any bytes to the channel. :func:`parse` turns a
frame's body into a typed event through a table of small validators, or into :class:`Invalid` when it is not
exactly what the runtime sends; :class:`Budget` bounds what one execution brings back to the server.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cellbox.runtime.protocol import (
    DISPLAY,
    DONE,
    ERROR,
    FATAL,
    READY,
    RESULT,
    STREAM,
    Message,
    ProtocolError,
    decode,
)
from cellbox.sandbox.events import Display, Error, Output, Result, Stream

MIB = 1 << 20
FRAME_ROOM = 8 * MIB  # a frame, and an execution's output in all, may exceed output_limit by this (figures, HTML)
MARKER_ROOM = 4096  # stdout+stderr may exceed output_limit by the runtime's own truncation marker
MAX_FRAMES = 10_000  # outputs per execution
MAX_IMAGE = 4 * MIB  # base64 characters per image

BASE64_TYPES = ("image/png", "image/jpeg")
JSON_TYPE = "application/json"  # sent as the object itself, as in Jupyter; every other MIME type is text
# The runtime writes non-ASCII as is (ensure_ascii=False), so it never escapes a surrogate. A lone one would
# break the JSON the server later renders; an escape is a backslash after an even run of backslashes.
_ESCAPED_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")


def frame_ceiling(output_limit: int) -> int:
    """The largest frame the host reads into memory (larger ones are skipped), and an execution's byte budget."""
    return output_limit + FRAME_ROOM


@dataclass(frozen=True)
class Done:
    """The runtime's last word on an execution."""

    status: Literal["ok", "error", "interrupted"]
    execution_count: int | None


@dataclass(frozen=True)
class Invalid:
    """A frame the runtime would never send: the session can no longer be trusted."""

    reason: str


@dataclass(frozen=True)
class Oversize:
    """A frame above the ceiling, skipped by the channel without holding it in memory."""

    size: int
    limit: int


@dataclass(frozen=True)
class Frame:
    """One frame from a container, as the host may use it."""

    id: str | None  # the request it answers
    event: Output | Done | Invalid | Oversize
    size: int  # bytes on the wire


class _Malformed(Exception):
    pass


def _string(message: Message, key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"'{key}' is not a string")
    return value


def _mapping(message: Message, key: str) -> dict[str, Any]:
    value = message.get(key)
    if not isinstance(value, dict):
        raise _Malformed(f"'{key}' is not an object")
    return value


def _stream(message: Message) -> Stream:
    name = _string(message, "name")
    if name not in ("stdout", "stderr"):
        raise _Malformed("'name' is neither stdout nor stderr")
    return Stream(name, _string(message, "text"))


def _bundle(message: Message) -> tuple[dict[str, Any], dict[str, Any]]:
    data = _mapping(message, "data")
    for mime, value in data.items():
        if mime == JSON_TYPE:
            continue
        if not isinstance(value, str):
            raise _Malformed(f"'data' has a value for {mime[:40]!r} that is not a string")
        if mime in BASE64_TYPES:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:
                raise _Malformed(f"'data' has a value for {mime} that is not base64") from None
    return data, {} if message.get("metadata") is None else _mapping(message, "metadata")


def _display(message: Message) -> Display:
    return Display(*_bundle(message))


def _result(message: Message) -> Result:
    return Result(*_bundle(message))


def _error(message: Message) -> Error:
    traceback = message.get("traceback")
    if not isinstance(traceback, list) or not all(isinstance(line, str) for line in traceback):
        raise _Malformed("'traceback' is not a list of strings")
    return Error(_string(message, "ename"), _string(message, "evalue"), traceback)


def _done(message: Message) -> Done:
    status, count = message.get("status"), message.get("execution_count")
    if status not in ("ok", "error", "interrupted"):
        raise _Malformed("'status' is not ok, error or interrupted")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
        raise _Malformed("'execution_count' is not an integer")
    return Done(status, count)


VALIDATORS: dict[str, Callable[[Message], Output | Done]] = {
    STREAM: _stream, DISPLAY: _display, RESULT: _result, ERROR: _error, DONE: _done,
}


def _decode(body: bytes) -> Message:
    try:
        message = decode(body)
    except RecursionError:
        raise _Malformed("the body is nested too deeply") from None
    except ProtocolError as exc:
        raise _Malformed(str(exc)) from None
    if _ESCAPED_SURROGATE.search(body):
        raise _Malformed("the body escapes a surrogate")
    return message


def parse(body: bytes) -> Frame:
    """The event a frame's body carries, and the request it answers; :class:`Invalid` for anything unexpected."""
    try:
        message = _decode(body)
        request_id, kind = message.get("id"), message["type"]
        if request_id is not None and not isinstance(request_id, str):
            raise _Malformed("'id' is not a string")
        validate = VALIDATORS.get(kind)
        if validate is None:
            raise _Malformed(f"unexpected type {kind[:40]!r}")
        return Frame(request_id, validate(message), len(body))
    except _Malformed as exc:
        return Frame(None, Invalid(str(exc)), len(body))


def greeting(body: bytes) -> str | None:
    """None when a container's first frame says the runtime is ready; else why it did not start."""
    try:
        message = _decode(body)
    except _Malformed:
        return "its first message was malformed"
    if message["type"] == READY:
        return None
    if message["type"] == FATAL and isinstance(message.get("message"), str):
        return str(message["message"])
    return "its first message was not 'ready'"


class Budget:
    """What one execution may bring back to the server. Past any limit the rest is dropped behind one marker,
    and ``stop`` is called once, to interrupt code that would otherwise keep sending."""

    def __init__(self, output_limit: int, stop: Callable[[], None]) -> None:
        self.text_limit = output_limit + MARKER_ROOM
        self.byte_limit = frame_ceiling(output_limit)
        self._stop = stop
        self._text = self._bytes = self._frames = 0
        self.exceeded: str | None = None  # which limit, once one was

    def take(self, event: Output | Oversize, size: int) -> list[Output]:
        """The outputs to pass on for one frame of ``size`` bytes: the event, part of a stream, or only the marker."""
        if self.exceeded is not None:
            return []
        self._frames += 1
        self._bytes += size
        fits, self.exceeded = self._check(event)
        kept = [] if fits is None else [fits]
        if self.exceeded is None:
            return kept
        self._stop()
        return [*kept, Stream("stderr", f"\n[output truncated: {self.exceeded}; the rest was dropped and the code "
                                        "interrupted]\n")]

    def _check(self, event: Output | Oversize) -> tuple[Output | None, str | None]:
        """What of the event may pass (all of it, the start of a stream, or nothing), and the limit it exceeds."""
        if isinstance(event, Oversize):
            return None, f"a message of {event.size} bytes, over the {event.limit}-byte limit"
        if self._frames > MAX_FRAMES:
            return None, f"more than {MAX_FRAMES} outputs"
        if self._bytes > self.byte_limit:
            return None, f"more than {self.byte_limit} bytes of output"
        if isinstance(event, Display | Result):
            big = max((len(event.data[mime]) for mime in BASE64_TYPES if mime in event.data), default=0)
            if big > MAX_IMAGE:
                return None, f"an image of {big} bytes, over the {MAX_IMAGE}-byte limit"
        if isinstance(event, Stream):
            data = event.text.encode()
            room, self._text = self.text_limit - self._text, self._text + len(data)
            if len(data) > room:
                kept = data[:room].decode("utf-8", "ignore")
                return Stream(event.name, kept) if kept else None, f"more than {self.text_limit} bytes of stdout/stderr"
        return event, None
