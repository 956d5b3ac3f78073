"""The egress proxy end to end on loopback: httpx (as code in a container would use it) or raw sockets, through
the proxy, to echo servers that show what arrived."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from cellbox.egress.proxy import Proxy
from tests.unit.egress.conftest import (
    API_PLACEHOLDER,
    API_SECRET,
    PATIENCE,
    PLAIN_PLACEHOLDER,
    PLAIN_SECRET,
    Serve,
    World,
    resolve_map,
)


def client(world: World, port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(proxy=f"http://127.0.0.1:{port}", verify=world.client_tls, trust_env=False,
                             timeout=PATIENCE)


async def exchange(port: int, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read until the proxy closes; the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()  # all said: the proxy may answer and close without waiting for more
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), PATIENCE)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def connect(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a proxy counter (it has no event to wait on); the bound only turns a hang into a failure."""
    try:
        async with asyncio.timeout(PATIENCE):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"gave up waiting for {what}")


@pytest.fixture
async def lookups(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every DNS lookup the event loop is asked for during the test."""
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    real = loop.getaddrinfo

    async def spy(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(host)
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", spy)
    return seen


async def test_https_goes_through_the_tunnel_to_the_host(world: World, serve: Serve) -> None:
    port, grant = await serve()
    async with client(world, port) as http:
        first = await http.get("https://api.test/echo?q=1")
        second = await http.post("https://api.test/upload", content=b"payload")
    assert first.status_code == 200
    assert first.json()["path"] == "/echo?q=1"
    assert dict(first.json()["headers"])["Host"] == "api.test"
    assert (second.json()["method"], second.json()["body"]) == ("POST", "payload")
    assert grant.bytes_used > 0


async def test_plain_http_is_forwarded_in_origin_form_with_the_urls_host(world: World, serve: Serve) -> None:
    port, _ = await serve()
    async with client(world, port) as http:
        first = await http.get("http://plain.test/echo?q=1")
        second = await http.get("http://plain2.test/again")  # keep-alive to another host: checked and re-dialled
    assert first.json()["path"] == "/echo?q=1"
    assert dict(first.json()["headers"])["Host"] == "plain.test"
    assert dict(second.json()["headers"])["Host"] == "plain2.test"


async def test_hop_by_hop_headers_stay_on_their_hop(world: World, serve: Serve) -> None:
    port, _ = await serve()
    hop = {"Proxy-Authorization": "Basic eDp5", "Connection": "keep-alive, X-Hop", "X-Hop": "1", "TE": "trailers",
           "X-End": "2"}
    async with client(world, port) as http:
        plain = await http.post("http://plain.test/echo", headers=hop, content=b"body")
        tunnelled = await http.get("https://api.test/echo", headers=hop)
    for response in (plain, tunnelled):
        names = {name.lower() for name, _ in response.json()["headers"]}
        assert "x-end" in names
        assert not names & {"proxy-authorization", "x-hop", "te"}
    assert plain.json()["body"] == "body"


async def test_a_name_off_the_allowlist_is_refused_and_never_looked_up(
        world: World, serve: Serve, lookups: list[Any]) -> None:
    port, _ = await serve()
    status, body = await exchange(port, connect("nowhere.invalid:443"))
    async with client(world, port) as http:
        plain = await http.get("http://nowhere.invalid/")
    assert status == 403
    assert body == b"cellbox egress: 'nowhere.invalid' is not in this container's network_policy allowlist\n"
    assert (plain.status_code, plain.content) == (403, body)
    assert plain.headers["content-type"].startswith("text/plain")
    assert lookups == []


@pytest.mark.parametrize("target", ["127.0.0.1:443", "[::1]:443", "2130706433:443", "0x7f.1:443", "::1"])
async def test_ip_literals_are_refused(serve: Serve, lookups: list[Any], target: str) -> None:
    port, _ = await serve()
    status, body = await exchange(port, connect(target))
    assert status == 403
    assert b"is an IP address: egress goes by domain name only" in body
    assert lookups == []


async def test_an_ip_literal_in_a_plain_url_is_refused(world: World, serve: Serve) -> None:
    port, _ = await serve()
    async with client(world, port) as http:
        response = await http.get("http://127.0.0.1/")
    assert response.status_code == 403
    assert b"'127.0.0.1' is an IP address" in response.content


async def test_a_permitted_name_that_resolves_to_loopback_is_refused(serve: Serve) -> None:
    port, _ = await serve()  # localhost is on the allowlist and not in the operator's map: /etc/hosts says loopback
    status, body = await exchange(port, connect("localhost:443"))
    assert status == 403
    assert body.startswith(b"cellbox egress: 'localhost' resolves to ")
    assert b"a loopback address: the proxy reaches public addresses only" in body


@pytest.mark.parametrize(("request_bytes", "port_text"), [
    (connect("api.test:8443"), b"port 8443"),
    (connect("plain.test:80"), b"port 80"),
    (connect("api.test:0"), b"port 0"),
    (b"GET http://plain.test:0/ HTTP/1.1\r\nHost: plain.test\r\n\r\n", b"port 0"),
    (b"GET http://plain.test:8080/ HTTP/1.1\r\nHost: plain.test:8080\r\n\r\n", b"port 8080"),
    (b"GET http://api.test:443/ HTTP/1.1\r\nHost: api.test:443\r\n\r\n", b"port 443"),
])
async def test_only_443_through_connect_and_80_for_plain_http(serve: Serve, request_bytes: bytes,
                                                              port_text: bytes) -> None:
    port, _ = await serve()
    status, body = await exchange(port, request_bytes)
    assert status == 403
    assert port_text in body


async def test_a_secret_is_injected_for_its_domain_only(world: World, serve: Serve,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cellbox.egress")
    port, _ = await serve()
    headers = {"Authorization": f"Bearer {API_PLACEHOLDER}", "X-Api-Key": f"a-{API_PLACEHOLDER}-b",
               "X-Other": PLAIN_PLACEHOLDER}
    async with client(world, port) as http:
        own = dict((await http.get("https://api.test/echo", headers=headers)).json()["headers"])
        other = dict((await http.get("https://other.test/echo", headers=headers)).json()["headers"])
        fronted = await http.get("https://api.test/echo", headers={"Host": API_PLACEHOLDER})  # refused, logged
        with pytest.raises(httpx.ProxyError, match="403"):
            await http.get("https://nowhere.invalid/", headers=headers)
    assert own["Authorization"] == f"Bearer {API_SECRET}"
    assert own["X-Api-Key"] == f"a-{API_SECRET}-b"
    assert own["X-Other"] == PLAIN_PLACEHOLDER  # plain.test's secret: not for api.test
    assert other["Authorization"] == f"Bearer {API_PLACEHOLDER}"
    assert other["X-Api-Key"] == f"a-{API_PLACEHOLDER}-b"
    assert fronted.status_code == 403
    assert "egress refused" in caplog.text
    for word in (API_SECRET, API_PLACEHOLDER, PLAIN_SECRET, PLAIN_PLACEHOLDER):
        assert word not in caplog.text


async def test_secrets_never_go_over_plain_http(world: World, serve: Serve) -> None:
    port, _ = await serve()  # plain.test has a secret of its own
    async with client(world, port) as http:
        response = await http.get("http://plain.test/echo", headers={"Authorization": PLAIN_PLACEHOLDER,
                                                                     "X-Api-Key": API_PLACEHOLDER})
    headers = dict(response.json()["headers"])
    assert (headers["Authorization"], headers["X-Api-Key"]) == (PLAIN_PLACEHOLDER, API_PLACEHOLDER)


async def test_a_host_header_other_than_the_tunnels_is_refused(world: World, serve: Serve) -> None:
    port, _ = await serve()
    async with client(world, port) as http:
        response = await http.get("https://api.test/echo", headers={"Host": "other.test",
                                                                     "Authorization": API_PLACEHOLDER})
    assert response.status_code == 403
    assert response.text == ("cellbox egress: the Host header 'other.test' is not the tunnel's host 'api.test': "
                             "a tunnel serves the host it was opened for only\n")


async def test_the_upstream_certificate_is_verified_for_the_name(serve: Serve) -> None:
    port, _ = await serve()  # wrong.test is mapped to the TLS server, whose certificate does not name it
    status, body = await exchange(port, connect("wrong.test:443"))
    assert status == 502
    assert b"'wrong.test' presented a certificate that does not verify" in body


async def test_a_download_over_the_allowance_is_cut_and_the_next_request_refused(world: World,
                                                                                  serve: Serve) -> None:
    port, grant = await serve(max_bytes=300_000)
    async with client(world, port) as http:
        with pytest.raises(httpx.TransportError):
            await http.get("https://api.test/big?n=2000000")
    assert grant.bytes_used == grant.max_bytes
    async with client(world, port) as http:
        response = await http.get("http://plain.test/echo")
    assert response.status_code == 403
    assert response.text == ("cellbox egress: 'plain.test': this container has used its egress allowance of "
                             "300000 bytes\n")


async def test_connections_over_the_limit_are_answered_429(world: World, serve: Serve) -> None:
    port, grant = await serve(max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await until(lambda: grant.connections == 2, "both connections counted")
    status, body = await exchange(port, connect("api.test:443"))
    assert status == 429
    assert b"2 connections open" in body
    _, writer = held.pop()
    writer.close()
    await writer.wait_closed()
    await until(lambda: grant.connections == 1, "the closed connection uncounted")
    async with client(world, port) as http:
        assert (await http.get("http://plain.test/echo")).status_code == 200
    for _, writer in held:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(("garbage", "status"), [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n", 400),
    (b"GET /origin-form HTTP/1.1\r\nHost: plain.test\r\n\r\n", 400),
    (b"GET https://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n", 400),
    (b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nNo colon here\r\n\r\n", 400),
    (b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", 431),
    (b"GET http://user:pw@plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n", 400),
    (b"GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     501),
    (b"CONNECT api.test:https HTTP/1.1\r\nHost: api.test\r\n\r\n", 400),
])
async def test_malformed_or_unsupported_requests_are_answered(world: World, serve: Serve, garbage: bytes,
                                                              status: int) -> None:
    port, _ = await serve()
    assert (await exchange(port, garbage))[0] == status
    async with client(world, port) as http:  # and the proxy goes on serving
        assert (await http.get("http://plain.test/echo")).status_code == 200


async def test_expect_100_continue_is_answered_by_the_proxy(serve: Serve) -> None:
    port, _ = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST http://plain.test/echo HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    writer.write(b"hello")
    rest = await asyncio.wait_for(reader.read(), PATIENCE)
    writer.close()
    await writer.wait_closed()
    assert interim.startswith(b"HTTP/1.1 100 ")
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert b'"body": "hello"' in rest


@pytest.fixture
async def impatient(world: World) -> AsyncIterator[Proxy]:
    """A proxy that waits a fifth of a second for anything."""
    proxy = Proxy(world.authority, resolve=resolve_map(world.http_port, world.https_port), idle_timeout=0.2)
    yield proxy
    await proxy.aclose()


async def test_a_head_trickled_a_byte_at_a_time_is_cut(impatient: Proxy, serve: Serve) -> None:
    port, grant = await serve(proxy=impatient)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET http://plain.test/ HTTP/1.1\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.01)

    trickling = asyncio.create_task(trickle())
    try:
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    finally:
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)
        writer.close()
    await until(lambda: grant.connections == 0, "the cut connection uncounted")


async def test_a_client_that_stops_reading_a_download_is_cut_and_nothing_piles_up(impatient: Proxy,
                                                                                   serve: Serve) -> None:
    port, grant = await serve(proxy=impatient)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET http://plain.test/big?n=100000000 HTTP/1.1\r\nHost: plain.test\r\n\r\n")
    await until(lambda: grant.connections == 0, "the stalled download cut")  # never read a byte of it
    writer.close()
    assert 0 < grant.bytes_used < 50_000_000  # the proxy read no faster than the client took


async def test_stop_closes_the_listener_and_live_connections(world: World, serve: Serve) -> None:
    port, grant = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(connect("api.test:443"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert world.proxy.stats()["connections"] >= 1
    await world.proxy.stop(grant.container_id)
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), PATIENCE) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
    assert grant.connections == 0


async def test_stats_count_grants_bytes_and_refusals(world: World, serve: Serve) -> None:
    before = world.proxy.stats()
    port, _ = await serve()
    await exchange(port, connect("nowhere.invalid:443"))
    async with client(world, port) as http:
        await http.get("http://plain.test/echo")
    after = world.proxy.stats()
    assert after["grants"] == before["grants"] + 1
    assert after["refusals"] == before["refusals"] + 1
    assert after["bytes"] > before["bytes"]


async def test_serving_a_container_twice_is_a_mistake(world: World, serve: Serve) -> None:
    _, grant = await serve()
    with socket.create_server(("127.0.0.1", 0)) as listener, pytest.raises(ValueError, match="already"):
        await world.proxy.serve(listener, grant)
