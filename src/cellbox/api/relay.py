"""Requests for a container that another live node runs are relayed to that node, whichever server got them; a
create goes to the live node with the most room, when that is not this one (services/nodes.py, ``place``).

The relayed request is the client's own, bytes as they come (uploads and SSE streams included), with its API key:
the owner authenticates and authorises it as if the client had called it directly, and the node token (when the
cluster has one) says a peer sent it. Whatever of Cellbox's own peer headers the client sent is dropped, so a
client cannot speak for another project. A relayed request is never relayed again (``x-cellbox-relayed-by``), so
two nodes that disagree about an owner cannot bounce a request between them. A node that dies while relaying
answers 503, or ends the stream; one that vanishes without closing its connections is noticed when it is marked
down, so no relayed request waits forever.

Every relayed request holds one of this server's connections to its node while it runs (services/node_pool.py,
``NODE_CONNECTIONS`` per node). One that finds its node's all in use is answered 503 with Retry-After after
``NODE_POOL_TIMEOUT`` seconds (nothing reached the node: a retry is safe); the other nodes' requests go on. A
project may have ``RELAYED_PER_PROJECT`` requests relayed at once, a 429 beyond (a create this server can make
itself is made here instead), so one project cannot hold a node's connections and starve the others; so the relay
learns the caller's project from its key (the owner still authenticates and authorises the request itself). A
request ends when its client goes away, so a dropped stream gives its connection and its slot back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable
from typing import NamedTuple

import aiohttp
from starlette.types import ASGIApp, Receive, Scope, Send

from cellbox.api.errors import error_response
from cellbox.errors import CellboxError, Expired, SandboxUnavailable
from cellbox.services.node_pool import PoolFull
from cellbox.services.nodes import NodeLost
from cellbox.services.remote import NODE_TOKEN, ON_BEHALF_OF, RELAYED_BY, busy, peer_headers
from cellbox.services.wiring import Services

_RELAYED, _TOKEN = RELAYED_BY.encode(), NODE_TOKEN.encode()
_OURS = {name.encode() for name in (NODE_TOKEN, ON_BEHALF_OF, RELAYED_BY)}
_CONTAINER_PATH = re.compile(r"^/v1/containers/(cntr_[0-9a-f]{1,64})(?:/|$)")
# Per connection, not per message (RFC 9110 7.6.1); the owner and the client each frame their own.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
               b"upgrade", b"host"}
_BODY = {b"content-length", b"transfer-encoding"}  # a request with neither has no body to send on
_NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent")  # what aiohttp would add: the request stays the client's


class _Target(NamedTuple):
    node_id: str
    url: str
    cid: str | None  # None: a create placed on that node
    project: str | None  # whose slot the request holds (None: a server of the cluster, not counted)


class Relay:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == _RELAYED for k, _ in scope["headers"]):
            services: Services | None = getattr(scope["app"].state, "services", None)
            try:
                target = await _target(services, scope) if services is not None else None
            except CellboxError as exc:  # no node can take a new container, no valid key, the project's cap
                await error_response(exc)(scope, receive, send)
                return
            if services is not None and target is not None:
                try:
                    await _relay(services, target, scope, receive, send)
                finally:
                    services.relayed.release(target.project)
                return
        await self.app(scope, receive, send)


async def _target(services: Services, scope: Scope) -> _Target | None:
    """Where the request should go instead, with a slot of its project taken (the caller gives it back), or None to
    answer it here."""
    if any(step in (".", "..") for step in scope["path"].split("/")):
        return None  # never relayed: the owner's HTTP client would resolve it to another path (here it is a 404)
    if scope["path"] == "/v1/containers" and scope["method"] == "POST":
        project = await _authenticated(services, scope)  # placing counts the create on a node: only for a caller
        if services.relayed.full(project) and services.nodes.takes_more(services.containers.load):
            return None  # the project's share of relayed requests is in use: made here, which needs none of it
        services.relayed.take(project)  # we know, within its project's share (a refused create claims no room)
        other = None
        try:
            other = await services.nodes.place(services.containers.load)  # none: here (or this node says why not)
        finally:
            if other is None:
                services.relayed.release(project)
        return _Target(*other, None, project) if other is not None else None
    if match := _CONTAINER_PATH.match(scope["path"]):
        owner = await services.containers.owner_elsewhere(match.group(1))
        if owner is None:
            return None
        project = await _authenticated(services, scope)
        services.relayed.take(project)
        return _Target(*owner, match.group(1), project)
    return None


async def _authenticated(services: Services, scope: Scope) -> str | None:
    """The caller's project, from its key; None for a server of the cluster (the node token). Raises for a request
    with neither."""
    headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"authorization", _TOKEN)}
    if services.keys.peer(headers.get(_TOKEN)):
        return None
    return await services.keys.project_for(headers.get(b"authorization"))


async def _relay(services: Services, target: _Target, scope: Scope, receive: Receive, send: Send) -> None:
    node_id, url, cid, _ = target
    client = _Client(receive)
    started = False

    async def respond(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        nonlocal started
        started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def forward() -> None:
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in (
            *((k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP | _OURS),
            *peer_headers(services.settings.node_token, services.nodes.id))]
        body = client.body() if any(k.lower() in _BODY for k, _ in scope["headers"]) else client.no_body()
        try:
            async with services.node_pool.request(scope["method"], url + path + query, headers=headers, data=body,
                                                  skip_auto_headers=_NOT_ADDED) as response:
                await respond(response.status, [(k, v) for k, v in response.raw_headers
                                                if k.lower() not in _HOP_BY_HOP])
                with contextlib.suppress(aiohttp.ClientError):  # the owner died mid-answer: end what was sent
                    async for chunk in response.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except PoolFull:  # every connection to that node is in use: nothing was sent
            await error_response(busy((node_id, url)))(scope, receive, send)
            return
        except aiohttp.ClientError:
            if not started:  # otherwise the answer was on its way: end what was sent
                role = "which runs this container" if cid is not None else "chosen to make the container"
                await error_response(SandboxUnavailable(f"node {node_id} ({url}), {role}, did not answer; try "
                                                        "again"))(scope, receive, send)
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # the node's connection is back

    try:
        await client.unless_gone(services.nodes.unless_lost(node_id, forward()))
        return
    except NodeLost:
        pass
    if started:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif cid is None:
        await error_response(SandboxUnavailable(f"node {node_id} was lost while it made the container; try again"))(
            scope, receive, send)
    else:
        await error_response(Expired(f"Container {cid} has expired: its node {node_id} was lost while this request "
                                     "waited; create a new container."))(scope, receive, send)


class _Client:
    """The client of a relayed request: its body as it comes, then whether it went away. Both read ``receive``, one
    after the other: the watch begins once the body has been read."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._read = asyncio.Event()

    def no_body(self) -> None:
        """A request without a body (no length, not chunked): the watch for the client going away begins at once."""
        self._read.set()

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    return
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return
        finally:
            self._read.set()

    async def _gone(self) -> None:
        await self._read.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def unless_gone(self, work: Awaitable[None]) -> None:
        """``work``, cancelled if the client goes away first: nothing goes on being relayed to no one, and the node's
        connection and the project's slot are given back at once."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(self._gone())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this request was cancelled (the server is stopping)
            task.cancel()
            raise
        finally:
            gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            return
        task.result()
