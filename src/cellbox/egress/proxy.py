"""The egress proxy: serves each allowlisted container's HTTP/1.1 forward-proxy socket by that container's grant.

The rules, in the order they are checked:

- A request names its host: ``CONNECT host:443`` opens an HTTPS tunnel, ``GET http://host/path`` (absolute form)
  is plain HTTP. Anything else outside a tunnel (origin form, other schemes, credentials in the URL) is 400.
- IP literals (dotted, numeric, hex, IPv6) are 403: egress goes by name.
- The name, canonical (lower case, ASCII, no trailing dot), must match the container's allowlist
  (``name``, ``*.name``, ``.name``; see ``policy``), else 403. Nothing is resolved before this check: a refused
  name is never looked up.
- The port must be 443 for CONNECT and 80 for plain HTTP, else 403.
- Limits: at most ``max_connections`` client connections at once (one more is answered 429, before anything
  else is checked); at most ``max_bytes`` through the proxy for the container's life, counted as the HTTP
  messages (heads and bodies) exchanged with real hosts, each direction once. Once spent, new requests are 403;
  the transfer that crosses the line is cut (both connections closed).
- A name in the operator's ``resolve`` map connects to the mapped address and port, trusted as given; any other
  name is resolved once, every address of the answer must be public (not loopback, private, link-local, CGNAT,
  multicast, reserved, unspecified or a cloud metadata address, else 403), and the connection goes to an address
  that was checked (see ``destination``). A host that cannot be resolved, reached or verified, or that answers
  with broken HTTP, is 502 (504 when it is too slow).
- In a tunnel the proxy ends TLS with a leaf from the server's CA and serves requests in origin form; each
  request's Host must be the tunnel's host (403 otherwise: no domain fronting). It speaks TLS to the real host
  with full verification (the system's roots plus ``upstream_ca``).
- Secrets go over HTTPS only: in a tunnel, placeholders in request header values (every header: Authorization,
  custom ones) become the values of the secrets whose domain matches the tunnel's host; placeholders of other
  domains' secrets pass unchanged, and the request line, bodies and responses are never touched. Plain HTTP
  never carries a secret: its placeholders pass unchanged.
- Protocol upgrades (WebSocket) are 501. Hop-by-hop headers (Connection and the names it lists, Keep-Alive,
  Proxy-*, TE, Trailer, Upgrade, Expect) are not forwarded; the proxy answers ``Expect: 100-continue`` itself.
- Time: a request head must arrive whole within ``idle_timeout``; any read or write that makes no progress for
  ``idle_timeout`` ends the connection; DNS, connecting and each TLS handshake get ``connect_timeout``.

A refusal is the proxy's own response, a status and a one-line text/plain body naming the host and the reason
(``cellbox egress: ...``); the connection closes after it. Refusals are logged at INFO with the container and
the host; no secret value or placeholder is ever logged. A client that stalls, sends garbage or oversized heads
costs its own connection only: every read and write has a timeout, and every failure ends in this module.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import h11

from cellbox.egress.authority import Authority
from cellbox.egress.destination import Resolver, connect
from cellbox.egress.placeholders import Substitution
from cellbox.egress.policy import PORTS, Policy, Secret, hostname, is_ip_literal
from cellbox.egress.wire import CHUNK, MAX_HEAD, Peer, Refusal, Upstream, forwardable, refusal_events, relay_body
from cellbox.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_REFUSING = 16  # connections over the limit answered 429 at once; any beyond are closed unanswered
_QUIET = (OSError, TimeoutError)  # the client left, stalled or broke TLS (ssl.SSLError is an OSError): nothing to say


@dataclass
class Grant:
    """One container's egress: its policy, its secrets' placeholders and its limits, with live counters."""

    container_id: str
    policy: Policy
    placeholders: dict[str, Secret]  # the value the code sees (an environment variable) -> the secret it stands for
    max_bytes: int  # through the proxy, both directions, all connections, for the container's life
    max_connections: int  # open at once
    bytes_used: int = 0
    connections: int = 0


@dataclass
class _Listener:
    grant: Grant
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    refusing: int = 0
    stopped: bool = False


class Proxy:
    """Every container's listener and connections, with what they share: the CA, the resolver, upstream TLS."""

    def __init__(self, authority: Authority, resolve: dict[str, tuple[str, int]] | None = None,
                 upstream_ca: Path | None = None, connect_timeout: float = 10, idle_timeout: float = 60) -> None:
        self.authority = authority
        self.resolver = Resolver({hostname(name): target for name, target in (resolve or {}).items()},
                                 connect_timeout)
        self.upstream_tls = ssl.create_default_context()
        if upstream_ca is not None:
            self.upstream_tls.load_verify_locations(cafile=upstream_ca)
        self.upstream_tls.set_alpn_protocols(["http/1.1"])
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._listeners: dict[str, _Listener] = {}
        self._bytes = 0
        self._refusals = 0

    async def serve(self, listener: socket.socket, grant: Grant) -> None:
        """Answer the container's connections on ``listener`` (bound and listening; the proxy owns it now)."""
        if grant.container_id in self._listeners:
            raise ValueError(f"container {grant.container_id} already has an egress listener")
        entry = self._listeners[grant.container_id] = _Listener(grant)
        try:
            entry.server = await asyncio.start_server(partial(self._accept, entry), sock=listener, limit=CHUNK)
        except BaseException:
            del self._listeners[grant.container_id]
            raise

    async def stop(self, container_id: str) -> None:
        """Close the container's listener and cut its live connections."""
        entry = self._listeners.pop(container_id, None)
        if entry is None:
            return
        entry.stopped = True
        if entry.server is not None:
            entry.server.close()
        tasks = list(entry.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if entry.server is not None:
            await entry.server.wait_closed()

    async def aclose(self) -> None:
        await asyncio.gather(*(self.stop(container_id) for container_id in list(self._listeners)))

    def stats(self) -> dict[str, int]:
        grants = [entry.grant for entry in self._listeners.values()]
        return {"grants": len(grants), "connections": sum(grant.connections for grant in grants),
                "bytes": self._bytes, "refusals": self._refusals}

    def spend(self, grant: Grant, size: int) -> None:
        """Count bytes against the grant; the chunk that would cross the limit is refused (and pins the count)."""
        if grant.bytes_used + size > grant.max_bytes:
            grant.bytes_used = grant.max_bytes
            raise Refusal(403, _spent(grant))
        grant.bytes_used += size
        self._bytes += size

    def refused(self) -> None:
        self._refusals += 1

    async def _accept(self, entry: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        grant, task = entry.grant, asyncio.current_task()
        over = grant.connections >= grant.max_connections
        if entry.stopped or task is None or (over and entry.refusing >= MAX_REFUSING):
            writer.transport.abort()
            return
        entry.tasks.add(task)
        if over:
            entry.refusing += 1
        else:
            grant.connections += 1
        try:
            await _Session(self, grant, reader, writer).run(over_limit=over)
        except asyncio.CancelledError:
            # stop() cancelled us; ending cancelled would make asyncio's stream callback (3.11) report an error.
            if not entry.stopped:
                raise
        finally:
            if over:
                entry.refusing -= 1
            else:
                grant.connections -= 1
            entry.tasks.discard(task)


class _Session:
    """One client connection: its requests in turn (a tunnel once it asks for one) until it ends or is refused."""

    def __init__(self, proxy: Proxy, grant: Grant, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.grant = grant
        self.client = Peer(h11.SERVER, reader, writer, proxy.idle_timeout)
        self.upstream: Upstream | None = None
        self.tunnel: str | None = None  # the CONNECT host, once the tunnel is open
        self.substitution: Substitution | None = None
        self.host: str | None = None  # the host of the request under way, for the log

    async def run(self, over_limit: bool) -> None:
        clean = False
        try:
            await (self._refuse_over_limit() if over_limit else self._serve())
            clean = True
        except Refusal as refusal:
            clean = await self._answer(refusal)
        except h11.RemoteProtocolError as exc:
            clean = await self._answer(Refusal(exc.error_status_hint, _malformed(exc.error_status_hint)))
        except _QUIET:
            pass
        except Exception as exc:  # a defect here must cost this connection only; its text may quote a header
            log.warning("egress %s: connection ended by %s", self.grant.container_id, type(exc).__name__)
        finally:
            self._close(clean)

    async def _refuse_over_limit(self) -> None:
        if await self._next_request() is not None:  # read first, so the answer is not lost to a reset
            raise Refusal(429, f"this container already has {self.grant.max_connections} connections open "
                               "through the proxy, its limit")

    async def _serve(self) -> None:
        while (request := await self._next_request()) is not None:
            if request.method == b"CONNECT" and self.tunnel is None:
                await self._open_tunnel(request)
                continue
            await self._forward(request)
            if not self.client.next_cycle():
                return

    async def _next_request(self) -> h11.Request | None:
        """The next request's head, or None when the client closes, idles or takes too long to send one."""
        self.host = None
        try:
            event = await self.client.head()
        except TimeoutError:
            return None
        return event if isinstance(event, h11.Request) else None

    async def _open_tunnel(self, request: h11.Request) -> None:
        named, port = _split_authority(request.target.decode("ascii"))
        host = self._check(named, PORTS["https"] if port is None else port, PORTS["https"])
        self._check_allowance()
        if not isinstance(await self.client.next_event(), h11.EndOfMessage):
            raise Refusal(400, f"{host!r}: a CONNECT request has no body")
        self._drop_upstream()
        self.upstream = await self._connect(host, tls=True)  # first, so a failure is still an HTTP answer
        await self.client.send(h11.Response(status_code=200, headers=[], reason=b"Connection established"))
        early, closed = self.client.h11.trailing_data
        if early or closed:  # bytes sent before the tunnel opened cannot be handed to TLS
            raise ConnectionAbortedError("the client did not wait for the tunnel")
        writer = self.client.writer
        await writer.start_tls(self.proxy.authority.server_context(host),
                               ssl_handshake_timeout=self.proxy.connect_timeout)
        self.client = Peer(h11.SERVER, self.client.reader, writer, self.proxy.idle_timeout)
        self.tunnel = host
        self.substitution = Substitution(self.grant.policy, self.grant.placeholders, host)

    async def _forward(self, request: h11.Request) -> None:
        host, target = self._tunnel_target(request, self.tunnel) if self.tunnel else self._plain_target(request)
        if _values(request.headers, b"upgrade"):
            raise Refusal(501, f"{host!r}: protocol upgrades (WebSocket) through the proxy are not supported")
        self._check_allowance()
        upstream = await self._upstream_for(host)
        await upstream.request(request.method, target, self._headers(request, host))
        await relay_body(self.client, upstream)
        response = await self._response_head(upstream)
        await self.client.send(h11.Response(
            status_code=response.status_code, reason=response.reason,
            headers=forwardable(response.headers.raw_items(), _values(response.headers, b"connection"))))
        await relay_body(upstream, self.client)
        if not upstream.next_cycle():
            self._drop_upstream()

    def _tunnel_target(self, request: h11.Request, tunnel: str) -> tuple[str, bytes]:
        self.host = tunnel
        if request.method == b"CONNECT":
            raise Refusal(400, f"{tunnel!r}: a tunnel cannot carry another CONNECT")
        named = b"".join(_values(request.headers, b"host")).decode("ascii", "replace")
        host, port = _split_authority(named)
        if _canonical(host) != tunnel or port not in (None, PORTS["https"]):
            raise Refusal(403, f"the Host header {_show(named)} is not the tunnel's host {tunnel!r}: "
                               "a tunnel serves the host it was opened for only")
        if not request.target.startswith(b"/") and request.target != b"*":
            raise Refusal(400, f"{tunnel!r}: inside a tunnel, requests are in origin form (/path)")
        return tunnel, request.target

    def _plain_target(self, request: h11.Request) -> tuple[str, bytes]:
        try:
            url = urlsplit(request.target.decode("ascii"))  # h11 lets only visible ASCII into a target
        except ValueError:
            url = None
        if url is None or url.scheme.lower() != "http" or not url.netloc:
            raise Refusal(400, "this is a proxy: send plain HTTP in absolute form (http://host/path) and HTTPS "
                               "through CONNECT host:443")
        if "@" in url.netloc:
            raise Refusal(400, "credentials in a URL are not forwarded")
        host, port = _split_authority(url.netloc)
        host = self._check(host, PORTS["http"] if port is None else port, PORTS["http"])
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return host, path.encode("ascii")

    def _check(self, named: str, port: int, expected: int) -> str:
        """The canonical name of a host the container may reach on ``expected``; Refusal otherwise."""
        if is_ip_literal(named):
            raise Refusal(403, f"{_show(named)} is an IP address: egress goes by domain name only")
        host = _canonical(named)
        if host is None:
            raise Refusal(400, f"{_show(named)} is not a valid host name")
        self.host = host
        if not self.grant.policy.allows(host):
            raise Refusal(403, f"{host!r} is not in this container's network_policy allowlist")
        if port != expected:
            raise Refusal(403, f"{host!r} port {port}: egress goes to port 443 (HTTPS, through CONNECT) and "
                               "port 80 (plain HTTP) only")
        return host

    def _check_allowance(self) -> None:
        if self.grant.bytes_used >= self.grant.max_bytes:
            raise Refusal(403, f"{self.host!r}: {_spent(self.grant)}")

    async def _upstream_for(self, host: str) -> Upstream:
        """The open upstream connection if it goes to ``host`` and is still up, else a new one."""
        if self.upstream is not None and self.upstream.host == host and not self.upstream.reader.at_eof():
            return self.upstream
        self._drop_upstream()
        self.upstream = await self._connect(host, tls=self.tunnel is not None)
        return self.upstream

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    async def _connect(self, host: str, tls: bool) -> Upstream:
        destination = await self.proxy.resolver.find(host, PORTS["https" if tls else "http"])
        reader, writer = await connect(destination, self.proxy.upstream_tls if tls else None,
                                       self.proxy.connect_timeout)
        return Upstream(host, reader, writer, self.proxy.idle_timeout, partial(self.proxy.spend, self.grant))

    def _headers(self, request: h11.Request, host: str) -> list[tuple[bytes, bytes]]:
        """The request's end-to-end headers: with secrets in a tunnel, with the URL's host as Host in plain HTTP."""
        headers = forwardable(request.headers.raw_items(), _values(request.headers, b"connection"))
        if self.substitution is not None:
            return [(name, self.substitution.apply(value)) for name, value in headers]
        return [(b"Host", host.encode()), *((name, value) for name, value in headers if name.lower() != b"host")]

    async def _response_head(self, upstream: Upstream) -> h11.Response:
        """The upstream's response head; interim (1xx) responses go to the client on the way."""
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise Refusal(502, f"{upstream.host!r} closed the connection without a response")
            await self.client.send(h11.InformationalResponse(
                status_code=event.status_code, reason=event.reason,
                headers=forwardable(event.headers.raw_items(), _values(event.headers, b"connection"))))

    async def _answer(self, refusal: Refusal) -> bool:
        """Log the refusal and tell the client if a response can still start; whether it could."""
        reason = self._scrub(refusal.reason)
        self.proxy.refused()
        log.info("egress refused for container %s, host %s: %d %s", self.grant.container_id,
                 self._scrub(self.host or "-"), refusal.status, reason)
        if not self.client.can_respond:
            return False
        try:
            for event in refusal_events(refusal.status, reason):
                await self.client.send(event)
        except _QUIET:
            return False
        await self.client.linger()
        return True

    def _scrub(self, text: str) -> str:
        """Text from the client may hold a placeholder (the code knows them): never one in a log line."""
        for placeholder, secret in self.grant.placeholders.items():
            for word in (placeholder, secret.value):
                if word:
                    text = text.replace(word, "<secret>")
        return text

    def _close(self, clean: bool) -> None:
        """After a clean end, let what is written go out; otherwise cut at once."""
        for peer in (self.client, self.upstream):
            if peer is None:
                continue
            if clean:
                peer.close()
            else:
                peer.abort()


def _split_authority(text: str) -> tuple[str, int | None]:
    """``host[:port]`` (``[v6]:port`` too) into the host as written and the port, None when absent."""
    if text.startswith("["):
        host, _, rest = text.partition("]")
        host += "]"
    elif text.count(":") > 1:  # a bare IPv6 address: refused as a literal, whatever it ends with
        return text, None
    else:
        host, colon, rest = text.partition(":")
        rest = colon + rest
    if not rest:
        return host, None
    digits = rest[1:]
    if not rest.startswith(":") or not digits.isascii() or not digits.isdigit() or len(digits) > 5:
        raise Refusal(400, f"{_show(text)} does not end in a port number")
    return host, int(digits)


def _canonical(named: str) -> str | None:
    try:
        return hostname(named)
    except InvalidInput:
        return None


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The values of a header (h11 gives names in lower case)."""
    return [value for key, value in headers if key == name]


def _show(text: str) -> str:
    """Client text quoted for a message, kept short."""
    return repr(text if len(text) <= 100 else text[:100] + "...")


def _spent(grant: Grant) -> str:
    return f"this container has used its egress allowance of {grant.max_bytes} bytes"


def _malformed(status: int) -> str:
    if status == 431:
        return f"the request head is larger than {MAX_HEAD // 1024} KiB"
    return "the request is not valid HTTP/1.1"
