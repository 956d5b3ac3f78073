"""Another node's container, worked through that node's own /v1 API on behalf of a project: what the Responses loop
and the MCP tools use when the container they need runs elsewhere. They hold no client key (a background response
outlives its request), so the request carries the cluster's node token and names the project; a node honours the
project only beside the right token (services/auth.py). Errors come back as the domain errors the node raised."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from cellbox.errors import CellboxError, Expired, InvalidInput, NotFound, SandboxUnavailable, TooLarge
from cellbox.schemas.containers import ContainerFile, CreateContainer, Execution
from cellbox.services.nodes import NodeLost, Nodes

NODE_TOKEN = "x-cellbox-node-token"  # the cluster's shared secret: a peer sent this request
ON_BEHALF_OF = "x-cellbox-project"  # the project a peer asks for (honoured only beside the token)
RELAYED_BY = "x-cellbox-relayed-by"  # the node that sent it on: never relayed again
PAGE = 100  # container files listed per request
T = TypeVar("T")


def peer_headers(token: str, node_id: str, project: str | None = None) -> list[tuple[bytes, bytes]]:
    """What a request from this server to another carries."""
    headers = [(RELAYED_BY.encode(), node_id.encode())]
    if token:
        headers.append((NODE_TOKEN.encode(), token.encode()))
    if project is not None:
        headers.append((ON_BEHALF_OF.encode(), project.encode()))
    return headers


def _error(node: tuple[str, str], response: httpx.Response, policy_param: str | None = None) -> CellboxError:
    """The node's answer as the error it raised (OpenAI's envelope: status, message, param, code)."""
    try:
        error = response.json()["error"]
        message, param, code = str(error["message"]), error.get("param"), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, param, code = f"answered {response.status_code}", None, None
    if policy_param and isinstance(param, str) and param.startswith("network_policy"):
        param = policy_param + param.removeprefix("network_policy")  # the field as the caller named it
    if response.status_code == 404:
        return NotFound(message, param)
    if response.status_code == 413:
        return TooLarge(message, param)
    if response.status_code == 400:
        return Expired(message, param) if code == "container_expired" else InvalidInput(message, param)
    if response.status_code in (401, 403):
        return SandboxUnavailable(f"node {node[0]} ({node[1]}) refused this server: {message} (every server of a "
                                  "cluster needs the same CELLBOX_NODE_TOKEN)")
    return SandboxUnavailable(f"node {node[0]} ({node[1]}): {message}")


class Remote:
    def __init__(self, http: httpx.AsyncClient, nodes: Nodes, token: str) -> None:
        self._http = http
        self._nodes = nodes
        self._token = token

    def _headers(self, node: tuple[str, str], project: str) -> dict[str, str]:
        if not self._token:
            raise SandboxUnavailable(f"that container runs on node {node[0]} ({node[1]}), and this server can "
                                     "reach it only with the cluster's node token: set CELLBOX_NODE_TOKEN on every "
                                     "server")
        return {k.decode(): v.decode() for k, v in peer_headers(self._token, self._nodes.id, project)}

    async def _guard(self, node: tuple[str, str], work: Awaitable[T]) -> T:
        """``work`` against ``node``, its failures said as domain errors."""
        try:
            return await self._nodes.unless_lost(node[0], work)
        except NodeLost:
            raise Expired(f"its node {node[0]} was lost while this request waited; create a new container") from None
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(f"node {node[0]} ({node[1]}) did not answer ({type(exc).__name__}); "
                                     "try again") from None

    async def _call(self, node: tuple[str, str], project: str, method: str, path: str,
                    policy_param: str | None = None, **kwargs: Any) -> httpx.Response:
        response = await self._guard(node, self._http.request(method, node[1] + path,
                                                               headers=self._headers(node, project), **kwargs))
        if response.status_code >= 400:
            raise _error(node, response, policy_param)
        return response

    async def create(self, node: tuple[str, str], project: str, body: CreateContainer, policy_param: str) -> str:
        response = await self._call(node, project, "POST", "/v1/containers", policy_param,
                                    json=body.model_dump(mode="json", exclude_none=True))
        return str(response.json()["id"])

    async def running(self, node: tuple[str, str], project: str, cid: str) -> None:
        status = (await self._call(node, project, "GET", f"/v1/containers/{cid}")).json()["status"]
        if status != "running":
            raise Expired(f"Container {cid} has expired; create a new container (its files are gone).")

    async def delete(self, node: tuple[str, str], project: str, cid: str) -> None:
        await self._call(node, project, "DELETE", f"/v1/containers/{cid}")

    async def run(self, node: tuple[str, str], project: str, cid: str, code: str, timeout: float | None,
                  figures: bool) -> Execution:
        body = {"code": code, "figures": figures, **({"timeout": timeout} if timeout is not None else {})}
        response = await self._call(node, project, "POST", f"/v1/containers/{cid}/execute", json=body)
        return Execution.model_validate(response.json())

    async def files(self, node: tuple[str, str], project: str, cid: str,
                    limit: int | None = None) -> tuple[list[ContainerFile], bool]:
        """The container's files, oldest first: all of them, or about the first ``limit``; and whether there
        are more."""
        files: list[ContainerFile] = []
        params: dict[str, str | int] = {"order": "asc", "limit": min(PAGE, limit or PAGE)}
        while True:
            page = (await self._call(node, project, "GET", f"/v1/containers/{cid}/files", params=params)).json()
            files += [ContainerFile.model_validate(item) for item in page["data"]]
            if not page["has_more"] or (limit is not None and len(files) >= limit):
                return files, bool(page["has_more"])
            params["after"] = page["last_id"]

    async def add_file(self, node: tuple[str, str], project: str, cid: str, fid: str) -> ContainerFile:
        response = await self._call(node, project, "POST", f"/v1/containers/{cid}/files", json={"file_id": fid})
        return ContainerFile.model_validate(response.json())

    async def add_upload(self, node: tuple[str, str], project: str, cid: str, name: str,
                         data: bytes) -> ContainerFile:
        response = await self._call(node, project, "POST", f"/v1/containers/{cid}/files",
                                    files={"file": (name, data)})
        return ContainerFile.model_validate(response.json())

    async def read(self, node: tuple[str, str], project: str, cid: str, fid: str, limit: int) -> bytes:
        """At most ``limit`` bytes of a container file (the rest is never read off the wire)."""
        headers = self._headers(node, project)

        async def read() -> bytes:
            url = f"{node[1]}/v1/containers/{cid}/files/{fid}/content"
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(node, response)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) >= limit:
                        break
                return bytes(data[:limit])

        return await self._guard(node, read())
