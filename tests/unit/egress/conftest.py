"""The egress proxy's world on loopback: a test CA, real upstream servers (plain and TLS) on 127.0.0.1 that echo
what reached them, one Proxy mapping test names to them, and grants served on fresh listening sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

from cellbox.egress.authority import Authority
from cellbox.egress.policy import Pattern, Policy, Secret, parse_policy
from cellbox.egress.proxy import Grant, Proxy
from tests.echo_servers import make_ca, make_leaf

PATIENCE = 120.0  # seconds: only turns a hang into a failure
UPSTREAM_NAMES = ["api.test", "other.test"]  # what the upstream TLS certificate covers
API_SECRET = "sk-real-api-value"
PLAIN_SECRET = "sk-real-plain-value"
API_PLACEHOLDER = "cbx-placeholder-API_KEY-3f9a"
PLAIN_PLACEHOLDER = "cbx-placeholder-PLAIN_KEY-77c1"


class Echo(BaseHTTPRequestHandler):
    """``/big?n=N``: N bytes; anything else: the request as JSON (method, path, headers, body)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._reply()

    do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

    def _reply(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        url = urlsplit(self.path)
        try:
            if url.path == "/big":
                self._big(int(parse_qs(url.query)["n"][0]))
                return
            payload = json.dumps({"method": self.command, "path": self.path, "headers": self.headers.items(),
                                  "body": body.decode()}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the proxy cut the transfer: what the test wants
            self.close_connection = True

    def _big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        for start in range(0, size, len(chunk)):
            self.wfile.write(chunk[: size - start])

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Upstream(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection the proxy cut or a handshake it broke off on purpose


@dataclass
class World:
    authority: Authority
    proxy: Proxy
    http_port: int
    https_port: int
    client_tls: ssl.SSLContext  # trusts the proxy's CA, as code in a container would


def start(server: Upstream) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="session")
def upstream_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The test CA's file and the upstream TLS server's certificate and key (for api.test and other.test)."""
    folder = tmp_path_factory.mktemp("upstream-ca")
    ca_key, ca = make_ca("Test upstream CA")
    key, cert = make_leaf(ca_key, ca, UPSTREAM_NAMES)
    paths = folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="session")
def upstreams(upstream_ca: tuple[Path, Path, Path]) -> Iterator[tuple[int, int]]:
    """(plain HTTP port, HTTPS port) of the echo servers on 127.0.0.1."""
    plain = Upstream(("127.0.0.1", 0), Echo)
    secure = Upstream(("127.0.0.1", 0), Echo)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(upstream_ca[1], upstream_ca[2])
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    threads = [start(plain), start(secure)]
    yield plain.server_address[1], secure.server_address[1]
    for server, thread in zip((plain, secure), threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join(PATIENCE)


def resolve_map(http_port: int, https_port: int) -> dict[str, tuple[str, int]]:
    return {"api.test": ("127.0.0.1", https_port), "other.test": ("127.0.0.1", https_port),
            "wrong.test": ("127.0.0.1", https_port), "plain.test": ("127.0.0.1", http_port),
            "plain2.test": ("127.0.0.1", http_port)}


@pytest.fixture(scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory, upstream_ca: tuple[Path, Path, Path],
                upstreams: tuple[int, int]) -> AsyncIterator[World]:
    authority = Authority.load_or_create(tmp_path_factory.mktemp("egress-ca"))
    proxy = Proxy(authority, resolve=resolve_map(*upstreams), upstream_ca=upstream_ca[0], idle_timeout=PATIENCE)
    client_tls = ssl.create_default_context(cadata=authority.cert_pem.decode())
    yield World(authority, proxy, upstreams[0], upstreams[1], client_tls)
    await proxy.aclose()


def policy(domains: list[str] | None = None) -> Policy:
    """api.test, other.test, plain.test(2), wrong.test and localhost, with a secret for api.test and one for
    plain.test."""
    domains = domains or ["api.test", "other.test", "plain.test", "plain2.test", "wrong.test", "localhost"]
    return parse_policy(domains, [("api.test", "API_KEY", API_SECRET), ("plain.test", "PLAIN_KEY", PLAIN_SECRET)],
                        (Pattern.parse("*", allow_any=True),))


def placeholders(grant_policy: Policy) -> dict[str, Secret]:
    by_name = {secret.name: secret for secret in grant_policy.secrets}
    return {API_PLACEHOLDER: by_name["API_KEY"], PLAIN_PLACEHOLDER: by_name["PLAIN_KEY"]}


Serve = Callable[..., Awaitable[tuple[int, Grant]]]


@pytest.fixture
async def serve(world: World) -> AsyncIterator[Serve]:
    """Serve a grant on a fresh listening socket on 127.0.0.1; its port and the grant (stopped after the test)."""
    served: list[tuple[Proxy, str]] = []

    async def serve_grant(proxy: Proxy | None = None, max_bytes: int = 10**9, max_connections: int = 32,
                          domains: list[str] | None = None) -> tuple[int, Grant]:
        grant_policy = policy(domains)
        grant = Grant(f"cntr_test{len(served)}", grant_policy, placeholders(grant_policy), max_bytes,
                      max_connections)
        listener = socket.create_server(("127.0.0.1", 0))
        proxy = proxy or world.proxy
        await proxy.serve(listener, grant)
        served.append((proxy, grant.container_id))
        return listener.getsockname()[1], grant

    yield serve_grant
    for proxy, container_id in served:
        await proxy.stop(container_id)


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fails the test if anything reached the event loop's exception handler (an exception that escaped)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    loop.set_exception_handler(previous)
    assert not seen
