"""The host's checks on frames: exactly what the runtime sends passes, anything else is Invalid; budgets cut."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cellbox.runtime.protocol import HEADER, encode
from cellbox.sandbox.events import Display, Error, Output, Result, Stream
from cellbox.sandbox.frames import (
    FRAME_ROOM,
    MARKER_ROOM,
    MAX_FRAMES,
    MAX_IMAGE,
    Budget,
    Done,
    Frame,
    Invalid,
    Oversize,
    frame_ceiling,
    greeting,
    parse,
)

PNG = "iVBORw0KGgo="


def body(message: dict[str, Any]) -> bytes:
    return encode(message)[HEADER.size:]


def parsed(message: dict[str, Any]) -> Frame:
    return parse(body(message))


@pytest.mark.parametrize(("message", "event"), [
    ({"type": "stream", "name": "stdout", "text": "hi\n"}, Stream("stdout", "hi\n")),
    ({"type": "stream", "name": "stderr", "text": ""}, Stream("stderr", "")),
    ({"type": "display", "data": {"text/plain": "x", "image/png": PNG}, "metadata": {"image/png": {"width": 2}}},
     Display({"text/plain": "x", "image/png": PNG}, {"image/png": {"width": 2}})),
    ({"type": "display", "data": {"application/json": {"a": [1]}}, "metadata": {}},
     Display({"application/json": {"a": [1]}})),
    ({"type": "result", "data": {"text/plain": "2"}}, Result({"text/plain": "2"})),
    ({"type": "result", "data": {"text/plain": "2"}, "metadata": None}, Result({"text/plain": "2"})),
    ({"type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": ["a", "b"]},
     Error("ZeroDivisionError", "division by zero", ["a", "b"])),
    ({"type": "done", "status": "ok", "execution_count": 3}, Done("ok", 3)),
    ({"type": "done", "status": "interrupted", "execution_count": None}, Done("interrupted", None)),
])
def test_what_the_runtime_sends_passes(message: dict[str, Any], event: Output | Done) -> None:
    frame = parsed({**message, "id": "7"})
    assert frame == Frame("7", event, len(body({**message, "id": "7"})))


def test_frames_between_executions_have_no_request() -> None:
    assert parsed({"type": "stream", "name": "stdout", "text": "x", "id": None}).id is None


@pytest.mark.parametrize(("message", "reason"), [
    ({"type": "stream"}, "'name' is not a string"),
    ({"type": "stream", "name": "stdin", "text": "x"}, "neither stdout nor stderr"),
    ({"type": "stream", "name": "stdout", "text": 5}, "'text' is not a string"),
    ({"type": "display", "data": "x"}, "'data' is not an object"),
    ({"type": "display", "data": {"text/plain": 5}}, "not a string"),
    ({"type": "display", "data": {"text/html": ["<b>"]}}, "not a string"),
    ({"type": "display", "data": {"image/png": 5}}, "not a string"),
    ({"type": "display", "data": {"image/png": "not base64!"}}, "not base64"),
    ({"type": "display", "data": {"image/jpeg": "QUJD\n"}}, "not base64"),
    ({"type": "display", "data": {"image/png": "QUJ"}}, "not base64"),  # bad padding
    ({"type": "display", "data": {}, "metadata": [1]}, "'metadata' is not an object"),
    ({"type": "result", "data": [1, 2]}, "'data' is not an object"),
    ({"type": "error", "ename": "E"}, "'traceback' is not a list of strings"),
    ({"type": "error", "ename": "E", "evalue": "v", "traceback": "tb"}, "'traceback' is not a list of strings"),
    ({"type": "error", "ename": "E", "evalue": "v", "traceback": ["a", 1]}, "'traceback' is not a list of strings"),
    ({"type": "error", "ename": 1, "evalue": "v", "traceback": []}, "'ename' is not a string"),
    ({"type": "done", "status": "great", "execution_count": 1}, "'status'"),
    ({"type": "done", "execution_count": 1}, "'status'"),
    ({"type": "done", "status": "ok", "execution_count": "1"}, "'execution_count'"),
    ({"type": "done", "status": "ok", "execution_count": True}, "'execution_count'"),
    ({"type": "done", "status": "ok", "execution_count": 1.0}, "'execution_count'"),
    ({"type": "surprise"}, "unexpected type 'surprise'"),
    ({"type": "ready"}, "unexpected type 'ready'"),  # only ever the first frame
    ({"type": "stream", "name": "stdout", "text": "x", "id": 5}, "'id' is not a string"),
])
def test_frames_of_the_wrong_shape_are_invalid(message: dict[str, Any], reason: str) -> None:
    frame = parsed({"id": "1", **message})
    assert isinstance(frame.event, Invalid)
    assert reason in frame.event.reason
    assert frame.id is None  # a malformed frame names no request: it ends whatever runs


@pytest.mark.parametrize(("raw", "reason"), [
    (b"hello", "not JSON"),
    (b"[1, 2]", "not an object with a 'type'"),
    (b'{"type": 5}', "not an object with a 'type'"),
    (b"\xff\xfe{}", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"type": "stream", "name": "stdout", "text": "\\udcff", "id": "1"}', "escapes a surrogate"),
    (b'{"type": "stream", "name": "stdout", "text": "\\\\\\ud83d\\ude00", "id": "1"}', "escapes a surrogate"),
])
def test_bodies_that_are_not_json_objects_are_invalid(raw: bytes, reason: str) -> None:
    event = parse(raw).event
    assert isinstance(event, Invalid)
    assert reason in event.reason


def test_an_escaped_backslash_before_u_is_just_text() -> None:
    raw = b'{"type": "stream", "name": "stdout", "text": "\\\\ud800 and \\\\\\\\udfff", "id": "1"}'
    assert parse(raw).event == Stream("stdout", "\\ud800 and \\\\udfff")
    assert json.loads(raw)["text"] == "\\ud800 and \\\\udfff"


def test_non_ascii_text_the_runtime_writes_as_is_passes() -> None:
    text = "é€😀\x00\x1b"  # control characters are the only ones it escapes
    assert parsed({"type": "stream", "name": "stdout", "text": text}).event == Stream("stdout", text)


def test_greeting() -> None:
    assert greeting(body({"type": "ready", "id": None, "python": "3.11.7"})) is None
    assert greeting(body({"type": "fatal", "id": None, "message": "no /mnt/data"})) == "no /mnt/data"
    assert greeting(body({"type": "fatal", "id": None})) == "its first message was not 'ready'"
    assert greeting(body({"type": "stream", "name": "stdout", "text": "x"})) == "its first message was not 'ready'"
    assert greeting(b"garbage") == "its first message was malformed"


class Stops:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


LIMIT = 1000


@pytest.fixture
def stops() -> Stops:
    return Stops()


@pytest.fixture
def budget(stops: Stops) -> Budget:
    return Budget(LIMIT, stops)


def marker(outputs: list[Output]) -> str:
    last = outputs[-1]
    assert isinstance(last, Stream)
    assert last.name == "stderr"
    assert last.text.startswith("\n[output truncated: ")
    return last.text


def test_output_within_the_budget_passes_untouched(budget: Budget, stops: Stops) -> None:
    outputs: list[Output] = [Stream("stdout", "x" * LIMIT), Display({"text/plain": "y"}), Error("E", "v", [])]
    for output in outputs:
        assert budget.take(output, 100) == [output]
    assert budget.exceeded is None
    assert stops.count == 0


def test_the_runtimes_own_marker_fits_beyond_the_output_limit(budget: Budget) -> None:
    runtime_marker = "\n[output truncated: 5 more bytes beyond the 1000-byte limit]\n"
    assert budget.take(Stream("stdout", "x" * LIMIT), LIMIT) == [Stream("stdout", "x" * LIMIT)]
    assert budget.take(Stream("stderr", runtime_marker), 100) == [Stream("stderr", runtime_marker)]


def test_streams_are_cut_at_the_limit_on_a_character_boundary(budget: Budget, stops: Stops) -> None:
    assert budget.take(Stream("stdout", "a" * (LIMIT + MARKER_ROOM - 1)), 10) == [
        Stream("stdout", "a" * (LIMIT + MARKER_ROOM - 1))]
    outputs = budget.take(Stream("stderr", "éé"), 10)  # 4 bytes, 1 byte of room: no half character
    assert len(outputs) == 1
    assert f"more than {LIMIT + MARKER_ROOM} bytes of stdout/stderr" in marker(outputs)
    assert stops.count == 1


def test_a_stream_that_overflows_keeps_what_fits(budget: Budget) -> None:
    outputs = budget.take(Stream("stdout", "b" * (LIMIT + MARKER_ROOM + 10)), 10)
    assert outputs[0] == Stream("stdout", "b" * (LIMIT + MARKER_ROOM))
    marker(outputs)


def test_after_a_limit_everything_is_dropped_and_stop_is_called_once(budget: Budget, stops: Stops) -> None:
    budget.take(Oversize(1 << 30, frame_ceiling(LIMIT)), 1 << 30)
    assert budget.take(Stream("stdout", "x"), 10) == []
    assert budget.take(Display({"text/plain": "y"}), 10) == []
    assert budget.take(Error("E", "v", []), 10) == []
    assert stops.count == 1
    assert budget.exceeded is not None
    assert "a message of 1073741824 bytes" in budget.exceeded


def test_bytes_of_all_outputs_are_bounded(budget: Budget) -> None:
    size = frame_ceiling(LIMIT) // 4
    for _ in range(4):
        assert budget.take(Display({"text/plain": "x"}), size) == [Display({"text/plain": "x"})]
    outputs = budget.take(Display({"text/plain": "x"}), size)
    assert f"more than {LIMIT + FRAME_ROOM} bytes of output" in marker(outputs)
    assert len(outputs) == 1


def test_the_number_of_outputs_is_bounded(budget: Budget) -> None:
    for _ in range(MAX_FRAMES):
        assert budget.take(Stream("stdout", ""), 1) == [Stream("stdout", "")]
    assert f"more than {MAX_FRAMES} outputs" in marker(budget.take(Stream("stdout", ""), 1))


@pytest.mark.parametrize("mime", ["image/png", "image/jpeg"])
def test_images_are_bounded(budget: Budget, mime: str) -> None:
    assert budget.take(Result({mime: "A" * MAX_IMAGE}), MAX_IMAGE) == [Result({mime: "A" * MAX_IMAGE})]
    outputs = budget.take(Display({"text/plain": "x", mime: "A" * (MAX_IMAGE + 4)}), MAX_IMAGE)
    assert f"an image of {MAX_IMAGE + 4} bytes" in marker(outputs)
