"""Request bodies: the key is checked before a body is read, and no body passes the upload limit while arriving."""

from __future__ import annotations

import socket

import httpx

from tests.integration.api.server import Server

BOUNDARY = "cellboxboundary"


def _chunked_upload(server: Server, path: str, key: str, first_chunk: bytes) -> socket.socket:
    """Start a chunked multipart upload and send only its first chunk; the rest never comes."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + first_chunk
    sock.sendall(head.encode() + f"{len(part):x}\r\n".encode() + part + b"\r\n")
    return sock


def _status(sock: socket.socket) -> int:
    with sock, sock.makefile("rb") as reply:
        return int(reply.readline().split()[1])


def test_a_bad_key_is_refused_before_the_body_is_read(server: Server) -> None:
    """Only part of the body is ever sent: an answer at all proves the server did not wait to read it."""
    for path in ("/v1/files", "/v1/containers/cntr_x/files"):
        assert _status(_chunked_upload(server, path, "not-a-key", b"x" * 65536)) == 401


def test_a_chunked_body_over_the_limit_is_cut_off(server: Server) -> None:
    """The test server's limit is 4m: a chunked body (no length declared) is refused once it passes it."""
    sock = _chunked_upload(server, "/v1/files", "key-a", b"x" * 65536)
    chunk = b"y" * (1 << 20)
    try:
        for _ in range(8):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    except OSError:
        pass  # the server may close the connection while we still send
    assert _status(sock) == 413


def test_a_declared_length_over_the_limit_is_refused_at_once(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key-a\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999\r\n\r\n")
    assert _status(sock) == 413


def test_uploads_within_the_limit_still_work(server: Server) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-a"}, timeout=60) as http:
        created = http.post("/v1/files", files={"file": ("ok.bin", b"z" * (3 << 20))}, data={"purpose": "assistants"})
    assert created.status_code == 200, created.text
    assert created.json()["bytes"] == 3 << 20
