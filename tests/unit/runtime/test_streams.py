"""StreamSink (coalescing, budget, truncation marker), Outbox (framed sends), OutputStream, FdPump decoding."""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest

from cellbox.runtime import streams
from cellbox.runtime.protocol import STREAM, Message, recv_message
from cellbox.runtime.streams import FdPump, Outbox, OutputStream, StreamSink


class Collector:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def texts(self) -> list[tuple[str, str]]:
        return [(m["name"], m["text"]) for m in self.messages]


@pytest.fixture
def sent() -> Collector:
    return Collector()


def marker(dropped: int, limit: int) -> str:
    return f"\n[output truncated: {dropped} more bytes beyond the {limit}-byte limit]\n"


# --- StreamSink: coalescing -------------------------------------------------------------------------


def test_same_stream_writes_are_coalesced_into_one_event(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    sink.begin("r1")
    for part in ("a", "b", "c\n"):
        sink.write("stdout", part)
    assert sent.messages == []  # buffered until a flush
    sink.end()
    assert sent.messages == [{"type": STREAM, "id": "r1", "name": "stdout", "text": "abc\n"}]


def test_a_stream_change_starts_a_new_event_and_order_is_kept(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    sink.begin("r2")
    sink.write("stdout", "1")
    sink.write("stdout", "2")
    sink.write("stderr", "3")
    sink.write("stdout", "4")
    sink.write("stderr", "5")
    sink.write("stderr", "6")
    sink.end()
    assert sent.texts == [("stdout", "12"), ("stderr", "3"), ("stdout", "4"), ("stderr", "56")]
    assert {m["id"] for m in sent.messages} == {"r2"}
    assert {m["type"] for m in sent.messages} == {STREAM}


def test_flush_sends_buffered_text_once(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    sink.begin("r1")
    sink.write("stdout", "early")
    sink.flush()
    sink.flush()
    assert sent.texts == [("stdout", "early")]
    sink.write("stdout", "late")
    sink.end()
    assert sent.texts == [("stdout", "early"), ("stdout", "late")]


def test_a_large_buffer_is_flushed_without_waiting_for_the_end(sent: Collector,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "FLUSH_BYTES", 8)
    sink = StreamSink(sent, limit=1000)
    sink.begin("r1")
    sink.write("stdout", "1234")
    assert sent.messages == []
    sink.write("stdout", "5678")
    assert sent.texts == [("stdout", "12345678")]


def test_empty_writes_produce_nothing(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    sink.begin("r1")
    sink.write("stdout", "")
    sink.end()
    assert sent.messages == []


def test_writes_outside_an_execution_are_dropped(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    sink.write("stdout", "before any execution")
    sink.begin("r1")
    sink.write("stdout", "inside")
    sink.end()
    sink.write("stderr", "after the execution")
    sink.flush()
    sink.begin("r2")
    sink.end()
    assert sent.texts == [("stdout", "inside")]
    assert [m["id"] for m in sent.messages] == ["r1"]


# --- StreamSink: byte budget ------------------------------------------------------------------------


def test_output_within_the_budget_has_no_marker(sent: Collector) -> None:
    sink = StreamSink(sent, limit=10)
    sink.begin("r1")
    sink.write("stdout", "0123456789")  # exactly the limit
    sink.end()
    assert sent.texts == [("stdout", "0123456789")]


def test_output_beyond_the_budget_is_dropped_with_one_marker_counting_the_bytes(sent: Collector) -> None:
    sink = StreamSink(sent, limit=10)
    sink.begin("r1")
    sink.write("stdout", "0123456")  # 7 kept
    sink.write("stderr", "789ABC")  # 3 kept, 3 dropped
    sink.write("stdout", "more")  # 4 dropped
    sink.write("stderr", "even more")  # 9 dropped
    sink.end()
    assert sent.texts[0] == ("stdout", "0123456")
    assert "".join(text for name, text in sent.texts[1:] if name == "stderr") == "789" + marker(16, 10)
    assert sent.texts[-1][1].endswith(marker(16, 10))
    assert sum(text.count("[output truncated") for _, text in sent.texts) == 1
    kept = "".join(text for _, text in sent.texts).replace(marker(16, 10), "")
    assert len(kept.encode()) == 10


def test_the_marker_is_added_at_the_end_not_when_the_budget_runs_out(sent: Collector) -> None:
    sink = StreamSink(sent, limit=4)
    sink.begin("r1")
    sink.write("stdout", "abcdef")
    sink.flush()
    assert sent.texts == [("stdout", "abcd")]
    sink.write("stdout", "gh")
    sink.end()
    assert sent.texts == [("stdout", "abcd"), ("stderr", marker(4, 4))]


def test_the_budget_counts_utf8_bytes_not_characters(sent: Collector) -> None:
    sink = StreamSink(sent, limit=8)
    sink.begin("r1")
    sink.write("stdout", "😀😀😀")  # 12 bytes: two emoji fit
    sink.end()
    assert sent.texts == [("stdout", "😀😀"), ("stderr", marker(4, 8))]


@pytest.mark.parametrize(("limit", "kept"), [(1, "a"), (2, "a"), (3, "aé"), (4, "aé"), (5, "aé"), (6, "aé€")])
def test_a_multibyte_character_cut_by_the_budget_is_dropped_whole(sent: Collector, limit: int, kept: str) -> None:
    text = "aé€"  # 1 + 2 + 3 bytes
    sink = StreamSink(sent, limit=limit)
    sink.begin("r1")
    sink.write("stdout", text)
    sink.end()
    assert sent.texts[0] == ("stdout", kept)
    for _, out in sent.texts:
        out.encode("utf-8")  # strict: no lone surrogates or other invalid text
        assert "\ufffd" not in out
    dropped = len(text.encode()) - len(kept.encode())
    if dropped:
        assert sent.texts[1:] == [("stderr", marker(dropped, limit))]
    else:
        assert sent.texts[1:] == []


def test_each_execution_gets_a_fresh_budget(sent: Collector) -> None:
    sink = StreamSink(sent, limit=3)
    sink.begin("r1")
    sink.write("stdout", "abcdef")
    sink.end()
    sink.begin("r2")
    sink.write("stdout", "xyz")
    sink.end()
    r2 = [(m["name"], m["text"]) for m in sent.messages if m["id"] == "r2"]
    assert r2 == [("stdout", "xyz")]


def test_begin_can_set_a_per_execution_limit(sent: Collector) -> None:
    sink = StreamSink(sent, limit=100)
    sink.begin("r1", limit=2)
    sink.write("stdout", "abcd")
    sink.end()
    assert sent.texts == [("stdout", "ab"), ("stderr", marker(2, 2))]


# --- Outbox ------------------------------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _blocked() -> set[signal.Signals]:
    return signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_outbox_sends_frames_and_restores_the_signal_mask(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    before = _blocked()
    assert signal.SIGINT not in before
    Outbox(a).send({"type": STREAM, "id": "r1", "name": "stdout", "text": "héllo"})
    assert _blocked() == before
    assert recv_message(b) == {"type": STREAM, "id": "r1", "name": "stdout", "text": "héllo"}


def test_outbox_sends_from_other_threads(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    outbox = Outbox(a)
    errors: list[BaseException] = []

    def send(n: int) -> None:
        try:
            for i in range(20):
                outbox.send({"type": "t", "n": n, "i": i, "pad": "x" * 2000})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    received = [recv_message(b) for _ in range(60)]
    for t in threads:
        t.join(10)
    assert not errors
    assert all(m is not None for m in received)
    for n in range(3):
        assert [m["i"] for m in received if m and m["n"] == n] == list(range(20))  # frames never interleave


def test_sink_to_outbox_end_to_end(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    sink = StreamSink(Outbox(a).send, limit=1000)
    sink.begin("r9")
    sink.write("stdout", "out ")
    sink.write("stdout", "ü\n")
    sink.write("stderr", "err\n")
    sink.end()
    assert recv_message(b) == {"type": STREAM, "id": "r9", "name": "stdout", "text": "out ü\n"}
    assert recv_message(b) == {"type": STREAM, "id": "r9", "name": "stderr", "text": "err\n"}


def test_lone_surrogates_printed_by_user_code_do_not_break_the_channel(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``print(name)`` for an undecodable file name (surrogateescape) must not crash the session.

    A strict stdout would raise UnicodeEncodeError in the user's code; silently replacing is fine too. What
    must not happen is the sink accepting the text and the frame encoder failing later, in the pump thread
    or in ``end()`` (which today kills the runtime: "The Python session exited").
    """
    a, b = pair
    sink = StreamSink(Outbox(a).send, limit=1000)
    out = OutputStream("stdout", sink, 1)
    sink.begin("r1")
    with contextlib.suppress(UnicodeEncodeError):
        out.write("bad name: \udcff\n")
    out.write("after\n")
    sink.end()
    a.close()
    texts = []
    while (message := recv_message(b)) is not None:
        texts.append(message["text"])
    assert "after\n" in "".join(texts)


# --- OutputStream ------------------------------------------------------------------------------------


def test_output_stream_feeds_the_sink(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    out = OutputStream("stderr", sink, 2)
    sink.begin("r1")
    print("a", 1, file=out)
    assert out.write("xyz") == 3
    out.flush()
    sink.end()
    assert sent.texts == [("stderr", "a 1\nxyz")]


def test_output_stream_looks_like_a_text_stream() -> None:
    out = OutputStream("stdout", StreamSink(Collector(), 10), 1)
    assert out.name == "stdout"
    assert out.encoding == "utf-8"
    assert out.writable()
    assert not out.isatty()
    assert out.fileno() == 1


def test_output_stream_refuses_bytes() -> None:
    out = OutputStream("stdout", StreamSink(Collector(), 10), 1)
    with pytest.raises(TypeError, match="must be str"):
        out.write(b"bytes")  # type: ignore[arg-type]


# --- FdPump decoding (without touching this process's fds 1 and 2) ---------------------------------


def test_fd_pump_decodes_utf8_split_across_reads(sent: Collector) -> None:
    sink = StreamSink(sent, limit=1000)
    pump = FdPump(sink)
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(read_end, False)
        pump._pipes[read_end] = ("stdout", codecs.getincrementaldecoder("utf-8")("replace"))
        sink.begin("r1")
        data = "x€y".encode()
        os.write(write_end, data[:2])  # ends inside the euro sign
        pump._read_available(read_end)
        os.write(write_end, data[2:])
        pump._read_available(read_end)
        sink.end()
    finally:
        for fd in (read_end, write_end, pump._wake_r, pump._wake_w):
            os.close(fd)
    assert sent.texts == [("stdout", "x€y")]
