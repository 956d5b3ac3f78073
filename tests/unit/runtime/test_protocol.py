"""Framing: a 4-byte big-endian length, then one JSON object with a string ``type``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from cellbox.runtime import protocol
from cellbox.runtime.protocol import HEADER, MAX_FRAME, ProtocolError, decode, encode, parse_length, recv_message


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    b.settimeout(5)  # a framing bug must fail the test, not hang it
    yield a, b
    a.close()
    b.close()


def test_encode_prefixes_the_byte_length_of_the_json_body() -> None:
    message = {"type": protocol.STREAM, "id": "r1", "text": "é€😀"}
    frame = encode(message)
    (length,) = HEADER.unpack(frame[: HEADER.size])
    body = frame[HEADER.size:]
    assert length == len(body)
    assert length > len(json.dumps(message, ensure_ascii=False))  # bytes, not characters
    assert json.loads(body) == message


def test_header_is_four_bytes_big_endian() -> None:
    frame = encode({"type": "x"})
    assert HEADER.size == 4
    assert frame[:4] == len(frame[4:]).to_bytes(4, "big")


def test_decode_round_trips_encode() -> None:
    message = {"type": protocol.DISPLAY, "id": None, "data": {"text/plain": "1"}, "n": [1, 2.5, True]}
    assert decode(encode(message)[HEADER.size:]) == message


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"{}",
        b'{"id": "r1"}',
        b'{"type": 5}',
        b'{"type": null}',
    ],
)
def test_decode_rejects_anything_but_an_object_with_a_string_type(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(body)


def test_parse_length_accepts_up_to_the_limit_and_refuses_more() -> None:
    assert parse_length(HEADER.pack(0)) == 0
    assert parse_length(HEADER.pack(MAX_FRAME)) == MAX_FRAME
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_length(HEADER.pack(MAX_FRAME + 1))


def test_recv_message_reads_consecutive_frames(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    first = {"type": protocol.EXECUTE, "id": "1", "code": "1"}
    second = {"type": protocol.EXECUTE, "id": "2", "code": "x = 'ü'"}
    a.sendall(encode(first) + encode(second))
    assert recv_message(b) == first
    assert recv_message(b) == second


def test_recv_message_reassembles_a_frame_sent_in_pieces(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    message = {"type": protocol.STREAM, "text": "x" * 1000}
    frame = encode(message)
    a.sendall(frame[:2])
    a.sendall(frame[2:7])
    a.sendall(frame[7:])
    assert recv_message(b) == message


def test_recv_message_returns_none_on_clean_eof(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    assert recv_message(b) is None


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_recv_message_refuses_a_frame_cut_short(pair: tuple[socket.socket, socket.socket], cut: int) -> None:
    a, b = pair
    a.sendall(encode({"type": "x", "text": "hello world"})[:cut])
    a.close()
    with pytest.raises(ProtocolError):
        recv_message(b)


def test_recv_message_refuses_an_oversized_header_without_reading_the_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(HEADER.pack(MAX_FRAME + 1))  # no body follows: reading one would hang until the timeout
    with pytest.raises(ProtocolError, match="exceeds"):
        recv_message(b)


def test_recv_message_refuses_a_non_json_body(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(HEADER.pack(5) + b"hello")
    with pytest.raises(ProtocolError, match="not JSON"):
        recv_message(b)
