"""Container work wherever the container runs: with this node's engine when it runs the container (or should make
it), through the node that does otherwise (services/remote.py). What the Responses loop and the MCP tools use; the
/v1 container routes are relayed whole instead (api/relay.py). On one machine every call is local."""

from __future__ import annotations

import asyncio

from cellbox.egress.policy import Policy
from cellbox.errors import NotFound
from cellbox.schemas.containers import ContainerFile, CreateContainer, Execution, NetworkPolicy
from cellbox.services.containers import Containers
from cellbox.services.execution import Executions, container_file
from cellbox.services.nodes import Nodes
from cellbox.services.remote import Remote


class Cluster:
    def __init__(self, containers: Containers, executions: Executions, nodes: Nodes, remote: Remote) -> None:
        self._containers = containers
        self._executions = executions
        self._nodes = nodes
        self._remote = remote

    def check_policy(self, body: NetworkPolicy | None, param: str) -> Policy | None:
        return self._containers.check_policy(body, param)

    async def create(self, project: str, body: CreateContainer, policy_param: str = "network_policy") -> str:
        """A new container on the node with the most room (this one, unless another has more); its id."""
        node = await self._nodes.place(self._containers.load)
        if node is not None:
            return await self._remote.create(node, project, body, policy_param)
        return (await self._containers.create(project, body, policy_param)).id

    async def running(self, project: str, cid: str) -> None:
        """Nothing when the container is this project's and running; otherwise the error that says why not."""
        if node := await self._containers.owner_elsewhere(cid):
            await self._remote.running(node, project, cid)
        else:
            await self._containers.sandbox(project, cid)

    async def delete(self, project: str, cid: str) -> None:
        if node := await self._containers.owner_elsewhere(cid):
            await self._remote.delete(node, project, cid)
        else:
            await self._containers.delete(project, cid)

    async def run(self, project: str, cid: str, code: str, timeout: float | None = None,
                  figures: bool = False) -> Execution:
        if node := await self._containers.owner_elsewhere(cid):
            return await self._remote.run(node, project, cid, code, timeout, figures)
        return await self._executions.run(project, cid, code, timeout, figures)

    async def present(self, project: str, cid: str, names: set[str]) -> set[str]:
        """Which of these names are files in the container's /mnt/data."""
        if not names:
            return set()
        if node := await self._containers.owner_elsewhere(cid):
            files = await self._remote.files_at(node, project, cid, sorted(f"/mnt/data/{name}" for name in names))
            paths = [file.path for file in files]
        else:
            _, box = await self._containers.sandbox(project, cid)
            paths = [file.path for file in await asyncio.to_thread(box.files)]
        return {path.removeprefix("/mnt/data/") for path in paths} & names

    async def files(self, project: str, cid: str, limit: int) -> tuple[list[ContainerFile], bool]:
        """The container's first ``limit`` files, oldest first, and whether there are more."""
        if node := await self._containers.owner_elsewhere(cid):
            return await self._remote.files(node, project, cid, limit)
        page = await self._containers.list_files(project, cid, limit, "asc", None)
        return [container_file(row) for row in page.rows], page.has_more

    async def add_file(self, project: str, cid: str, fid: str) -> ContainerFile:
        """A Files API file copied into the container (the nodes share the file store)."""
        if node := await self._containers.owner_elsewhere(cid):
            return await self._remote.add_file(node, project, cid, fid)
        return container_file(await self._containers.add_file(project, cid, fid))

    async def add_upload(self, project: str, cid: str, name: str, data: bytes) -> ContainerFile:
        if node := await self._containers.owner_elsewhere(cid):
            return await self._remote.add_upload(node, project, cid, name, data)
        return container_file(await self._containers.add_upload(project, cid, name, data))

    async def read_path(self, project: str, cid: str, path: str, limit: int) -> bytes:
        """At most ``limit`` bytes of the container file at ``path``."""
        if node := await self._containers.owner_elsewhere(cid):
            found = await self._remote.files_at(node, project, cid, [path])
            if not found:
                raise NotFound(f"no file {path} in container {cid}", "path")
            return await self._remote.read(node, project, cid, found[0].id, limit)
        return await self._containers.read_path(project, cid, path, limit)
