"""MCP over streamable HTTP at ``/mcp``: the same containers as ``/v1``, for MCP hosts (Claude Desktop, Cursor,
VS Code, the Agents SDK's MCP support). The bearer key decides the project, as on ``/v1``.

Two transports: streamable HTTP at ``/mcp``, and the older HTTP+SSE at ``/mcp/sse`` (with its messages at
``/mcp/messages/``), which vLLM's ``--tool-server`` uses for gpt-oss's built-in python tool: it discovers the
tools without credentials, so the SSE endpoints open without a key, and the tools ask for one when called.

Each MCP session (the session-based revisions) gets a container of its own on first use (the ``python`` tool's
state persists across the session's calls); a session never sees another's unless it names it. The stateless
revision (2026-07-28, which the Agents SDK speaks) has no sessions: every result names its ``container_id`` and
every tool accepts one, so a client keeps state by passing it back; a call without one gets a new container.
"""

from __future__ import annotations

import base64
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, ResourceLink, TextContent
from pydantic import Field

from cellbox.api.errors import error_response
from cellbox.errors import CellboxError, InvalidInput, RateLimited
from cellbox.schemas.containers import CreateContainer, ImageOutput, LogsOutput
from cellbox.services.wiring import Services

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
MAX_SESSIONS = 10_000  # remembered session -> container pairs (the oldest are forgotten first)
MAX_READ = 8 << 20  # bytes read_file returns at most
MAX_SSE_STREAMS = 256  # open /mcp/sse streams at once: they need no key, so they must cost a bounded amount

INSTRUCTIONS = (
    "Runs Python in a sandboxed, stateful Jupyter-like session: variables, imports and files persist between calls "
    "of this MCP session. Printed output, the value of the last expression and tracebacks come back as text, "
    "matplotlib figures as images. The working directory is /mnt/data: put files there to keep them, and read "
    "uploaded files from there. There is no internet access. Each call is interrupted after the server's timeout."
)

CodeArg = Annotated[str, Field(description="Python code to run")]
ContainerArg = Annotated[str | None, Field(description="The container_id an earlier result named: pass it to keep "
                                                       "variables and files (a client without MCP sessions gets a "
                                                       "new container otherwise)")]


class _Sessions:
    """Which container each MCP session uses, bounded."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, project: str, session: str) -> str | None:
        cid = self._by_session.get((project, session))
        if cid is not None:
            self._by_session.move_to_end((project, session))
        return cid

    def set(self, project: str, session: str, cid: str) -> None:
        self._by_session[(project, session)] = cid
        while len(self._by_session) > MAX_SESSIONS:
            self._by_session.popitem(last=False)


def _said(tool: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Cellbox's own errors reach the model with their message (the SDK hides any other exception's)."""

    @functools.wraps(tool)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await tool(*args, **kwargs)
        except CellboxError as exc:
            raise ToolError(str(exc)) from exc

    return run


def build(current: Callable[[], Services]) -> MCPServer:
    """The MCP server; ``current`` gives the running services (they start with the app, after this is built)."""
    server = MCPServer(name="python", instructions=INSTRUCTIONS)
    sessions = _Sessions()

    async def project_of(ctx: Context) -> str:
        headers = ctx.headers or {}
        return await current().keys.project_for(headers.get("authorization"))

    async def container(ctx: Context, project: str, given: str | None) -> str:
        services = current()
        """The named container (a 404 unless this project's and running), or this session's own."""
        if given:
            await services.cluster.running(project, given)
            return given
        headers = ctx.headers or {}
        session = headers.get("mcp-session-id") or headers.get("x-session-id")  # x-session-id: vLLM, per request
        if session and (cid := sessions.get(project, session)):
            try:
                await services.cluster.running(project, cid)
                return cid
            except CellboxError:
                pass  # expired or deleted: a new one, as the first call of a session gets
        cid = await services.cluster.create(project, CreateContainer(name=f"mcp: {session or 'stateless'}"))
        if session:
            sessions.set(project, session, cid)
        return cid

    @server.tool(description="Run Python code in this session's container. " + INSTRUCTIONS)
    @_said
    async def python(code: CodeArg, ctx: Context, container_id: ContainerArg = None) -> list[Any]:
        project = await project_of(ctx)
        cid = await container(ctx, project, container_id)
        execution = await current().cluster.run(project, cid, code)
        text = "".join(o.logs for o in execution.outputs if isinstance(o, LogsOutput))
        ending = f"[status: {execution.status}; container_id: {cid}]"
        if execution.message:
            ending = f"[{execution.message}]\n{ending}"
        content: list[Any] = [TextContent(text=f"{text}{ending}")]  # text first: vLLM reads only content[0]
        for output in execution.outputs:
            if isinstance(output, ImageOutput) and output.url.startswith("data:image/png;base64,"):
                content.append(ImageContent(data=output.url.split(",", 1)[1], mime_type="image/png"))
        for file in execution.files:
            content.append(ResourceLink(uri=f"/v1/containers/{cid}/files/{file.id}/content",
                                        name=file.path.rsplit("/", 1)[-1], description=file.path,
                                        size=file.bytes))
        return content

    @server.tool(description="List the files in /mnt/data of this session's container.")
    @_said
    async def list_files(ctx: Context, container_id: ContainerArg = None) -> str:
        project = await project_of(ctx)
        cid = await container(ctx, project, container_id)
        files, has_more = await current().cluster.files(project, cid, 100)
        lines = [f"{file.path}\t{file.bytes} bytes\t{file.id}" for file in files]
        more = ["[more files: list them over /v1]"] if has_more else []
        return "\n".join(lines + more + [f"[container_id: {cid}]"])

    @server.tool(description="Put a file into /mnt/data of this session's container (text, or base64 for bytes).")
    @_said
    async def upload_file(name: str, content: str, ctx: Context, base64_encoded: bool = False,
                          container_id: ContainerArg = None) -> str:
        project = await project_of(ctx)
        cid = await container(ctx, project, container_id)
        try:
            data = base64.b64decode(content, validate=True) if base64_encoded else content.encode()
        except ValueError:
            raise InvalidInput("content is not valid base64", "content") from None
        row = await current().cluster.add_upload(project, cid, name, data)
        return f"{row.path} ({row.bytes} bytes) [container_id: {cid}]"

    @server.tool(description="Read a file from /mnt/data of this session's container: text as text, other "
                             "files as base64.")
    @_said
    async def read_file(path: str, ctx: Context, container_id: ContainerArg = None) -> str:
        project = await project_of(ctx)
        cid = await container(ctx, project, container_id)
        full = path if path.startswith("/mnt/data/") else f"/mnt/data/{path.lstrip('/')}"
        data = await current().cluster.read_path(project, cid, full, MAX_READ + 1)
        if len(data) > MAX_READ:
            raise InvalidInput(f"{full} is larger than {MAX_READ >> 20} MiB; download it over /v1", "path")
        if b"\x00" not in data:  # text: UTF-8 without NULs
            try:
                return data.decode()
            except UnicodeDecodeError:
                pass
        return "base64:" + base64.b64encode(data).decode()

    return server


class Bounded:
    """At most ``limit`` requests at once through ``app`` (the keyless SSE streams); beyond, OpenAI's 429."""

    def __init__(self, app: ASGI, limit: int = MAX_SSE_STREAMS) -> None:
        self._app, self._limit, self._open = app, limit, 0

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if self._open >= self._limit:
            busy = RateLimited(f"{self._limit} MCP SSE streams are open; close one or use /mcp", retry_after=5)
            await error_response(busy)(scope, receive, send)
            return
        self._open += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._open -= 1


class Authenticated:
    """The MCP endpoint behind the same API keys and rate limit as /v1: a request without a valid key gets
    OpenAI's 401 envelope before the MCP layer reads a byte. (A class: Starlette routes to it as an ASGI app.)"""

    def __init__(self, app: ASGI, current: Callable[[], Services]) -> None:
        self._app, self._current = app, current

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "http":
            services = self._current()
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            try:
                project = await services.keys.project_for(headers.get("authorization"))
                services.rate_limiter.check(project)
            except CellboxError as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})["project"] = project  # for the access log
        await self._app(scope, receive, send)
