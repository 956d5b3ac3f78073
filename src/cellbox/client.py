"""A Python client for what the ``openai`` SDK does not cover: Cellbox's execute extension (run code in a
container without a model), in the SDK's style, sync and async, with streamed outputs::

    from cellbox.client import Client
    cellbox = Client("http://127.0.0.1:8000", api_key="sk-...")
    box = cellbox.containers.create(name="scratch")
    result = cellbox.containers.execute(box.id, "x = 6 * 7\\nprint(x)")
    print(result.status, result.outputs)

For everything else (files, containers, responses) use the ``openai`` SDK with ``base_url`` pointed here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from pydantic import TypeAdapter

from cellbox.schemas.containers import Container, Execution, ImageOutput, LogsOutput

Output = LogsOutput | ImageOutput
_OUTPUT: TypeAdapter[Output] = TypeAdapter(Output)


class CellboxAPIError(Exception):
    """The server answered with an error envelope (or could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        raise CellboxAPIError(message, response.status_code)
    return response.json() if response.content else None


def _events(lines: Iterator[str]) -> Iterator[Output | Execution]:
    """The execute stream: ``output`` events, then one ``done`` (or an ``error``)."""
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if name == "output":
                yield _OUTPUT.validate_python(data)
            elif name == "done":
                yield Execution.model_validate(data)
            elif name == "error":
                raise CellboxAPIError(data["error"]["message"])


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Containers:
    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def create(self, name: str, **fields: Any) -> Container:
        return Container.model_validate(_checked(self._http.post("/v1/containers", json={"name": name, **fields})))

    def list(self, limit: int = 100) -> list[Container]:
        page = _checked(self._http.get("/v1/containers", params={"limit": limit}))
        return [Container.model_validate(item) for item in page["data"]]

    def delete(self, container_id: str) -> None:
        _checked(self._http.delete(f"/v1/containers/{container_id}"))

    def execute(self, container_id: str, code: str, timeout: float | None = None) -> Execution:
        body = {"code": code, **({"timeout": timeout} if timeout else {})}
        return Execution.model_validate(_checked(self._http.post(f"/v1/containers/{container_id}/execute",
                                                                 json=body, timeout=None)))

    def stream(self, container_id: str, code: str, timeout: float | None = None) -> Iterator[Output | Execution]:
        """Outputs as the code prints or displays them, then the finished :class:`Execution`."""
        body = {"code": code, "stream": True, **({"timeout": timeout} if timeout else {})}
        with self._http.stream("POST", f"/v1/containers/{container_id}/execute", json=body, timeout=None) as reply:
            if reply.status_code >= 400:
                reply.read()
                _checked(reply)
            yield from _events(reply.iter_lines())


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 60.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout)
        self.containers = Containers(self._http)

    def health(self) -> dict[str, Any]:
        return dict(_checked(self._http.get("/health")))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncContainers:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def create(self, name: str, **fields: Any) -> Container:
        return Container.model_validate(_checked(await self._http.post("/v1/containers",
                                                                       json={"name": name, **fields})))

    async def execute(self, container_id: str, code: str, timeout: float | None = None) -> Execution:
        body = {"code": code, **({"timeout": timeout} if timeout else {})}
        return Execution.model_validate(_checked(await self._http.post(
            f"/v1/containers/{container_id}/execute", json=body, timeout=None)))

    async def stream(self, container_id: str, code: str,
                     timeout: float | None = None) -> AsyncIterator[Output | Execution]:
        body = {"code": code, "stream": True, **({"timeout": timeout} if timeout else {})}
        async with self._http.stream("POST", f"/v1/containers/{container_id}/execute", json=body,
                                     timeout=None) as reply:
            if reply.status_code >= 400:
                await reply.aread()
                _checked(reply)
            buffered: list[str] = []
            async for line in reply.aiter_lines():
                buffered.append(line)
                if line.startswith("data: "):
                    for item in _events(iter(buffered)):
                        yield item
                    buffered = []

    async def delete(self, container_id: str) -> None:
        _checked(await self._http.delete(f"/v1/containers/{container_id}"))


class AsyncClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float = 60.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout)
        self.containers = AsyncContainers(self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
