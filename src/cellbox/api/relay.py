"""Requests for a container that another live node runs are relayed to that node, whichever server got them; a
create goes to the live node with the most room, when that is not this one (services/nodes.py, ``place``).

The relayed request is the client's own, bytes as they come (uploads and SSE streams included), with its API key:
the owner authenticates and authorises it as if the client had called it directly, and the node token (when the
cluster has one) says a peer sent it. Whatever of Cellbox's own peer headers the client sent is dropped, so a
client cannot speak for another project. A relayed request is never relayed again (``x-cellbox-relayed-by``), so
two nodes that disagree about an owner cannot bounce a request between them. A node that dies while relaying
answers 503, or ends the stream; one that vanishes without closing its connections is noticed when it is marked
down, so no relayed request waits forever.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from cellbox.api.errors import error_response
from cellbox.errors import CellboxError, Expired, SandboxUnavailable
from cellbox.services.nodes import NodeLost
from cellbox.services.remote import NODE_TOKEN, ON_BEHALF_OF, RELAYED_BY, peer_headers
from cellbox.services.wiring import Services

_RELAYED, _TOKEN = RELAYED_BY.encode(), NODE_TOKEN.encode()
_OURS = {name.encode() for name in (NODE_TOKEN, ON_BEHALF_OF, RELAYED_BY)}
_CONTAINER_PATH = re.compile(r"^/v1/containers/(cntr_[0-9a-f]{1,64})(?:/|$)")
# Per connection, not per message (RFC 9110 7.6.1); the owner and the client each frame their own.
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
               b"upgrade", b"host"}


class Relay:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == _RELAYED for k, _ in scope["headers"]):
            services: Services | None = getattr(scope["app"].state, "services", None)
            try:
                target = await _target(services, scope) if services is not None else None
            except CellboxError as exc:  # no node can take a new container
                await error_response(exc)(scope, receive, send)
                return
            if services is not None and target is not None:
                await _relay(services, target, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _target(services: Services, scope: Scope) -> tuple[str, str, str | None] | None:
    """Where the request should go instead, as (node id, URL, container id), or None to answer it here."""
    if any(step in (".", "..") for step in scope["path"].split("/")):
        return None  # never relayed: the owner's HTTP client would resolve it to another path (here it is a 404)
    if scope["path"] == "/v1/containers" and scope["method"] == "POST":
        await _authenticated(services, scope)  # placing counts the create on a node: only for a caller we know
        other = await services.nodes.place(services.containers.live)  # none: here (or this node says why not)
        return (*other, None) if other is not None else None
    if match := _CONTAINER_PATH.match(scope["path"]):
        owner = await services.containers.owner_elsewhere(match.group(1))
        return (*owner, match.group(1)) if owner is not None else None
    return None


async def _authenticated(services: Services, scope: Scope) -> None:
    """Raise unless the request carries a key (or, from a server of the cluster, the node token)."""
    headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in (b"authorization", _TOKEN)}
    if not services.keys.peer(headers.get(_TOKEN)):
        await services.keys.project_for(headers.get(b"authorization"))


async def _relay(services: Services, target: tuple[str, str, str | None], scope: Scope, receive: Receive,
                 send: Send) -> None:
    node_id, url, cid = target
    started = False

    async def respond(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        nonlocal started
        started = True
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def forward() -> None:
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP | _OURS]
        request = services.relay.build_request(scope["method"], url + path + query,
                                               headers=[*headers, *peer_headers(services.settings.node_token,
                                                                                services.nodes.id)],
                                               content=_body(receive))
        try:
            response = await services.relay.send(request, stream=True)
        except httpx.HTTPError:
            role = "which runs this container" if cid is not None else "chosen to make the container"
            await error_response(SandboxUnavailable(f"node {node_id} ({url}), {role}, did not answer; try again"))(
                scope, receive, send)
            return
        try:
            await respond(response.status_code, [(k, v) for k, v in response.headers.raw
                                                 if k.lower() not in _HOP_BY_HOP])
            with contextlib.suppress(httpx.HTTPError):  # the owner died mid-answer: end what was sent
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    try:
        await services.nodes.unless_lost(node_id, forward())
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


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
