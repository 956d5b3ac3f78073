"""``cellbox mcp``: MCP over stdio for hosts that start their tools themselves (Claude Desktop, Cursor), as a
thin client of a running Cellbox: every request goes to its ``/mcp`` with the API key, over one MCP session, so
the ``python`` tool keeps its state for as long as the host keeps this process. Needs no root and no sandbox.
"""

from __future__ import annotations

import contextlib
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared._httpx_utils import create_mcp_http_client


async def serve(url: str, api_key: str) -> None:
    """Relay stdio to ``url``/mcp until the host closes stdin."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
        read, write = await stack.enter_async_context(streamable_http_client(url.rstrip("/") + "/mcp",
                                                                            http_client=http))
        remote = await stack.enter_async_context(ClientSession(read, write))
        init = await remote.initialize()

        async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
            return await remote.list_tools()

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await remote.call_tool(params.name, params.arguments or {})

        server: Server[Any] = Server(init.server_info.name, instructions=init.instructions,
                                     on_list_tools=list_tools, on_call_tool=call_tool)
        async with stdio_server() as (stdin, stdout):
            await server.run(stdin, stdout, server.create_initialization_options())
