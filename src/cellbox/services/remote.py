"""Another node's container, worked through that node's own /v1 API on behalf of a project: what the Responses loop
and the MCP tools use when the container they need runs elsewhere. They hold no client key (a background response
outlives its request), so the request carries the cluster's node token and names the project; a node honours the
project only beside the right token (services/auth.py). Errors come back as the domain errors the node raised; a
node that cannot be asked now (every connection in use, no answer) or whose answer this server cannot read (another
version, a proxy's page) is a SandboxUnavailable, never a hang or a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, TypeVar

import aiohttp
import pydantic

from cellbox.errors import (
    CellboxError,
    Expired,
    InvalidInput,
    NotFound,
    RateLimited,
    SandboxUnavailable,
    TooLarge,
)
from cellbox.schemas.common import Deleted
from cellbox.schemas.containers import ContainerFile, CreateContainer, Execution
from cellbox.services.in_flight import InFlight
from cellbox.services.node_pool import NODE_CONNECTIONS, NodePool, PoolFull
from cellbox.services.nodes import NodeLost, Nodes

NODE_TOKEN = "x-cellbox-node-token"  # the cluster's shared secret: a peer sent this request
ON_BEHALF_OF = "x-cellbox-project"  # the project a peer asks for (honoured only beside the token)
RELAYED_BY = "x-cellbox-relayed-by"  # the node that sent it on: never relayed again
PAGE = 100  # container files listed per request
RELAYED_PER_PROJECT = NODE_CONNECTIONS // 4  # relayed requests in flight per project (api/relay.py); then a 429
BUSY_RETRY_AFTER = 2  # seconds a client is told to wait when a node's connections are all in use
T = TypeVar("T")


def peer_headers(token: str, node_id: str, project: str | None = None) -> list[tuple[bytes, bytes]]:
    """What a request from this server to another carries."""
    headers = [(RELAYED_BY.encode(), node_id.encode())]
    if token:
        headers.append((NODE_TOKEN.encode(), token.encode()))
    if project is not None:
        headers.append((ON_BEHALF_OF.encode(), project.encode()))
    return headers


def busy(node: tuple[str, str]) -> SandboxUnavailable:
    """A request that found every connection to its node in use (PoolFull): nothing was sent, so a retry is
    safe."""
    return SandboxUnavailable(f"too many requests in flight to node {node[0]} ({node[1]}): all {NODE_CONNECTIONS} "
                              "connections of this server to it are in use; try again", retry_after=BUSY_RETRY_AFTER)


class _Answer(NamedTuple):
    """A node's whole answer, read while its connection was held."""

    status: int
    content_type: str
    body: bytes


def _unreadable(node: tuple[str, str], answer: _Answer, exc: Exception) -> SandboxUnavailable:
    """A 2xx answer that is not what this server's /v1 sends: another Cellbox version, or not Cellbox at all."""
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        why = f"{'.'.join(map(str, first['loc'])) or 'the body'}: {first['msg']}"
    else:
        why = f"{type(exc).__name__}: {exc}"
    kind = answer.content_type or "no content type"
    return SandboxUnavailable(f"node {node[0]} ({node[1]}) sent an answer this server cannot read ({kind}; are all "
                              f"servers the same Cellbox version?): {why[:200]}")


def _error(node: tuple[str, str], status: int, body: bytes, policy_param: str | None = None) -> CellboxError:
    """The node's answer as the error it raised (OpenAI's envelope: status, message, param, code)."""
    try:
        error = json.loads(body)["error"]
        message, param, code = str(error["message"]), error.get("param"), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, param, code = f"answered {status}", None, None
    if policy_param and isinstance(param, str) and param.startswith("network_policy"):
        param = policy_param + param.removeprefix("network_policy")  # the field as the caller named it
    if status == 404:
        return NotFound(message, param)
    if status == 413:
        return TooLarge(message, param)
    if status == 400:
        return Expired(message, param) if code == "container_expired" else InvalidInput(message, param)
    if status in (401, 403):
        return SandboxUnavailable(f"node {node[0]} ({node[1]}) refused this server: {message} (every server of a "
                                  "cluster needs the same CELLBOX_NODE_TOKEN)")
    return SandboxUnavailable(f"node {node[0]} ({node[1]}): {message}")


class Remote:
    def __init__(self, pool: NodePool, nodes: Nodes, token: str, in_flight: InFlight) -> None:
        self._pool = pool
        self._nodes = nodes
        self._token = token
        self._in_flight = in_flight  # shared with the relay: one share per project of this server's requests

    def _headers(self, node: tuple[str, str], project: str) -> dict[str, str]:
        if not self._token:
            raise SandboxUnavailable(f"that container runs on node {node[0]} ({node[1]}), and this server can "
                                     "reach it only with the cluster's node token: set CELLBOX_NODE_TOKEN on every "
                                     "server")
        return {k.decode(): v.decode() for k, v in peer_headers(self._token, self._nodes.id, project)}

    async def _guard(self, node: tuple[str, str], project: str, work: Coroutine[Any, Any, T]) -> T:
        """``work`` against ``node`` within the project's share of this server's requests to other nodes, as a
        relayed request is (a 429 beyond it), its failures said as domain errors."""
        try:
            self._in_flight.take(project)
        except RateLimited:
            work.close()
            raise
        try:
            return await self._nodes.unless_lost(node[0], work)
        except NodeLost:
            raise Expired(f"its node {node[0]} was lost while this request waited; create a new container") from None
        except PoolFull:
            raise busy(node) from None
        except aiohttp.ClientError as exc:
            raise SandboxUnavailable(f"node {node[0]} ({node[1]}) did not answer ({type(exc).__name__}); "
                                     "try again") from None
        finally:
            self._in_flight.release(project)

    async def _call(self, node: tuple[str, str], project: str, method: str, path: str, read: Callable[[Any], T],
                    policy_param: str | None = None, **kwargs: Any) -> T:
        """What ``read`` makes of the node's JSON answer; one it cannot read is the node's fault, not a 500."""
        headers = self._headers(node, project)

        async def exchange() -> _Answer:
            async with self._pool.request(method, node[1] + path, headers=headers, **kwargs) as response:
                return _Answer(response.status, response.headers.get("content-type", ""), await response.read())

        answer = await self._guard(node, project, exchange())
        if answer.status >= 400:
            raise _error(node, answer.status, answer.body, policy_param)
        try:
            return read(json.loads(answer.body))
        except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise _unreadable(node, answer, exc) from None

    async def create(self, node: tuple[str, str], project: str, body: CreateContainer, policy_param: str) -> str:
        return await self._call(node, project, "POST", "/v1/containers", lambda made: str(made["id"]), policy_param,
                                json=body.model_dump(mode="json", exclude_none=True))

    async def running(self, node: tuple[str, str], project: str, cid: str) -> None:
        status = await self._call(node, project, "GET", f"/v1/containers/{cid}", lambda box: box["status"])
        if status != "running":
            raise Expired(f"Container {cid} has expired; create a new container (its files are gone).")

    async def delete(self, node: tuple[str, str], project: str, cid: str) -> None:
        await self._call(node, project, "DELETE", f"/v1/containers/{cid}", Deleted.model_validate)

    async def run(self, node: tuple[str, str], project: str, cid: str, code: str, timeout: float | None,
                  figures: bool) -> Execution:
        body = {"code": code, "figures": figures, **({"timeout": timeout} if timeout is not None else {})}
        return await self._call(node, project, "POST", f"/v1/containers/{cid}/execute", Execution.model_validate,
                                json=body)

    async def files(self, node: tuple[str, str], project: str, cid: str,
                    limit: int) -> tuple[list[ContainerFile], bool]:
        """About the container's first ``limit`` files, oldest first, and whether there are more."""
        files: list[ContainerFile] = []
        params: dict[str, str | int] = {"order": "asc", "limit": min(PAGE, limit)}
        while True:
            data, more, last = await self._call(node, project, "GET", f"/v1/containers/{cid}/files", _page,
                                                params=params)
            files += data
            if not more or len(files) >= limit:
                return files, more
            params["after"] = last

    async def files_at(self, node: tuple[str, str], project: str, cid: str, paths: list[str]) -> list[ContainerFile]:
        """The container's files at these paths: a request per ``PAGE`` of them, however many files it has."""
        found: list[ContainerFile] = []
        for start in range(0, len(paths), PAGE):
            asked = paths[start:start + PAGE]
            params = [("limit", str(PAGE)), *(("path", path) for path in asked)]
            data, _, _ = await self._call(node, project, "GET", f"/v1/containers/{cid}/files", _page, params=params)
            found += [file for file in data if file.path in asked]  # a node from before the filter sends a page
        return found

    async def add_file(self, node: tuple[str, str], project: str, cid: str, fid: str) -> ContainerFile:
        return await self._call(node, project, "POST", f"/v1/containers/{cid}/files", ContainerFile.model_validate,
                                json={"file_id": fid})

    async def add_upload(self, node: tuple[str, str], project: str, cid: str, name: str,
                         data: bytes) -> ContainerFile:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name)
        return await self._call(node, project, "POST", f"/v1/containers/{cid}/files", ContainerFile.model_validate,
                                data=form)

    async def read(self, node: tuple[str, str], project: str, cid: str, fid: str, limit: int) -> bytes:
        """At most ``limit`` bytes of a container file (the rest is never read off the wire)."""
        headers = self._headers(node, project)

        async def read() -> bytes:
            url = f"{node[1]}/v1/containers/{cid}/files/{fid}/content"
            async with self._pool.request("GET", url, headers=headers) as response:
                if response.status >= 400:
                    raise _error(node, response.status, await response.read())
                data = bytearray()
                async for chunk in response.content.iter_any():
                    data += chunk
                    if len(data) >= limit:
                        break
                return bytes(data[:limit])

        return await self._guard(node, project, read())


def _page(body: Any) -> tuple[list[ContainerFile], bool, str]:
    """A page of a container's files, as the list envelope carries it: the files, whether more follow, the last id."""
    return [ContainerFile.model_validate(item) for item in body["data"]], bool(body["has_more"]), str(body["last_id"])
