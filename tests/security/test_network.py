"""Network isolation: a container has its own loopback and nothing else.

Every packet these tests send goes to a loopback address (127.0.0.1 or ::1), on the host or inside the
container; nothing is ever aimed at another address, not even to show it is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cellbox.sandbox.sandbox import Sandbox
from tests.security.helpers import probe

CONNECT = '''
import socket


def connect(family, address):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(address)
'''


class _Listener:
    """A TCP server on a host loopback address that counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    @contextlib.asynccontextmanager
    async def serve(self, host: str) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._on_connect, host, 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await server.wait_closed()


async def _host_can_connect(host: str, port: int) -> None:
    """The listener really was up: the host itself reaches it."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_only_loopback_interface_and_no_routes(box: Sandbox) -> None:
    out = await probe(box, """
        import socket
        out["interfaces"] = [name for _, name in socket.if_nameindex()]
        out["devices"] = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
        out["routes"] = [line for line in open("/proc/net/route").read().splitlines()[1:] if line.strip()]
        try:
            out["ipv6_route_devices"] = sorted({line.split()[-1] for line in open("/proc/net/ipv6_route")})
        except FileNotFoundError:
            out["ipv6_route_devices"] = []
    """)
    assert out["interfaces"] == ["lo"]
    assert out["devices"] == ["lo"]
    assert out["routes"] == []
    assert set(out["ipv6_route_devices"]) <= {"lo"}


async def test_host_loopback_server_is_unreachable(box: Sandbox) -> None:
    listener = _Listener()
    async with contextlib.AsyncExitStack() as stack:
        port4 = await stack.enter_async_context(listener.serve("127.0.0.1"))
        port6 = await stack.enter_async_context(listener.serve("::1")) if _ipv6_loopback() else None
        out = await probe(box, """
            out["v4"] = attempt(connect, socket.AF_INET, ("127.0.0.1", port4))
            out["v4_other"] = attempt(connect, socket.AF_INET, ("127.0.0.2", port4))
            if port6 is not None:
                out["v6"] = attempt(connect, socket.AF_INET6, ("::1", port6))
        """, setup=CONNECT, port4=port4, port6=port6)
        assert listener.accepted == 0
        assert out["v4"] == "ECONNREFUSED"
        assert out["v4_other"] == "ECONNREFUSED"
        await _host_can_connect("127.0.0.1", port4)
        if port6 is not None:
            assert out["v6"] == "ECONNREFUSED"
            await _host_can_connect("::1", port6)
        assert listener.accepted == (2 if port6 is not None else 1)


async def test_container_loopback_is_its_own(box: Sandbox) -> None:
    """Code can serve on its loopback, even on a port the host is using: it is a different loopback."""
    listener = _Listener()
    async with listener.serve("127.0.0.1") as host_port:
        out = await probe(box, """
            import socket
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind(("127.0.0.1", host_port))
            server.listen()
            client = socket.create_connection(("127.0.0.1", host_port), timeout=5)
            conn, _ = server.accept()
            client.sendall(b"ping")
            out["echo"] = conn.recv(4).decode()
            for s in (client, conn, server):
                s.close()
        """, host_port=host_port)
    assert out["echo"] == "ping"
    assert listener.accepted == 0


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A listening unix socket in the host's abstract namespace (which is per network namespace)."""
    name = f"\0cellbox-security-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(name)
        server.listen()
        server.setblocking(False)
        yield name, server


def _accept_one(server: socket.socket) -> None:
    conn, _ = server.accept()
    conn.close()


async def test_host_abstract_unix_socket_is_unreachable(box: Sandbox,
                                                        abstract_socket: tuple[str, socket.socket]) -> None:
    name, server = abstract_socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the host reaches it
        s.connect(name)
        _accept_one(server)
    out = await probe(box, """
        out["connect"] = attempt(connect, socket.AF_UNIX, name)
        own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        out["bind_same_name"] = attempt(own.bind, name)
        own.close()
    """, setup=CONNECT, name=name)
    assert out["connect"] == "ECONNREFUSED"
    with pytest.raises(BlockingIOError):  # nothing from the container is waiting to be accepted
        _accept_one(server)
    assert out["bind_same_name"] == "OK"  # the name is free in the container's own namespace


# --- DNS ----------------------------------------------------------------------------------------


class _FakeResolver(asyncio.DatagramProtocol):
    """A DNS server on the host's 127.0.0.1:53 that answers every A query with 127.0.0.1.

    A container with no resolv.conf asks 127.0.0.1:53, so if it could reach the host's loopback this
    server would answer and the name would resolve.
    """

    def __init__(self) -> None:
        self.queries: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries.append(data)
        end = 12
        while data[end]:
            end += data[end] + 1
        end += 5  # the root label, qtype, qclass
        qtype = struct.unpack("!H", data[end - 4:end - 2])[0]
        answer = b""
        if qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        header = data[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if answer else 0, 0, 0)
        self.transport.sendto(header + data[12:end] + answer, addr)


def _dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


@pytest.fixture
async def fake_resolver() -> AsyncIterator[_FakeResolver | None]:
    """The fake resolver, or None if something on the host already serves 127.0.0.1:53."""
    loop = asyncio.get_running_loop()
    try:
        transport, resolver = await loop.create_datagram_endpoint(_FakeResolver, local_addr=("127.0.0.1", 53))
    except OSError:
        yield None  # a real resolver there: resolving inside must still fail
        return
    try:
        yield resolver
    finally:
        transport.close()


async def test_dns_resolution_fails(box: Sandbox, fake_resolver: _FakeResolver | None) -> None:
    if fake_resolver is not None:  # the host reaches the fake resolver, and it answers
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.connect(("127.0.0.1", 53))
            await asyncio.get_running_loop().sock_sendall(s, _dns_query("example.com"))
            reply = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(s, 512), 10)
        assert reply.endswith(socket.inet_aton("127.0.0.1"))
        fake_resolver.queries.clear()
    out = await probe(box, """
        import ipaddress, os, socket
        nameservers = []
        if os.path.exists("/etc/resolv.conf"):
            nameservers = [line.split()[1] for line in open("/etc/resolv.conf") if line.startswith("nameserver")]
        out["foreign_nameservers"] = [ns for ns in nameservers if not ipaddress.ip_address(ns).is_loopback]
        if not out["foreign_nameservers"]:  # never aim a query anywhere but loopback
            try:
                socket.getaddrinfo("example.com", 443, socket.AF_INET, socket.SOCK_STREAM)
                out["getaddrinfo"] = "resolved"
            except socket.gaierror as exc:
                out["getaddrinfo"] = "gaierror"
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.settimeout(3)
            udp.connect(("127.0.0.1", 53))
            udp.send(query)
            out["raw_query"] = attempt(udp.recv, 512)
            udp.close()
    """, query=_dns_query("example.com"))
    assert out["foreign_nameservers"] == []
    assert out["getaddrinfo"] == "gaierror"
    assert out["raw_query"] in ("ECONNREFUSED", "TimeoutError")
    if fake_resolver is not None:
        assert fake_resolver.queries == []
