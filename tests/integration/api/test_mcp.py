"""MCP over streamable HTTP at /mcp, driven by the official MCP client SDK: the same keys, projects and
containers as /v1; one container per MCP session, state across its calls, figures as images, files as links."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from cellbox.api.mcp import Bounded
from tests.integration.api.server import Server, async_client, check_error
from tests.upstream import ScriptedUpstream

set_tracing_disabled(True)  # nothing leaves loopback

PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nopen('out.csv', 'w').write('a\\n1\\n')"


@asynccontextmanager
async def mcp_session(server: Server, key: str = "key-a") -> AsyncIterator[ClientSession]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, streamable_http_client(server.url + "/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def texts(result: Any) -> str:
    return "".join(part.text for part in result.content if part.type == "text")


def container_of(result: Any) -> str:
    return texts(result).rsplit("container_id: ", 1)[1].split("]", 1)[0]


async def test_the_tools_and_what_they_say(server: Server) -> None:
    async with mcp_session(server) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"python", "list_files", "upload_file", "read_file"}
        assert "stateful" in tools["python"].description
        assert "/mnt/data" in tools["python"].description
        assert "code" in tools["python"].input_schema["properties"]


async def test_a_session_keeps_its_state_and_gets_figures_and_files(server: Server) -> None:
    async with mcp_session(server) as session:
        first = await session.call_tool("python", {"code": "x = 41"})
        assert not first.is_error
        second = await session.call_tool("python", {"code": PLOT + "\nprint(x + 1)"})
        assert texts(second).startswith("42\n")
        assert [part.type for part in second.content if part.type != "text"] == ["image", "resource_link"]
        image = next(part for part in second.content if part.type == "image")
        assert image.mime_type == "image/png"
        link = next(part for part in second.content if part.type == "resource_link")
        assert link.name == "out.csv"
        assert container_of(first) == container_of(second)
        listed = await session.call_tool("list_files", {})
        assert "/mnt/data/out.csv" in texts(listed)
        assert (await session.call_tool("read_file", {"path": "out.csv"})).content[0].text == "a\n1\n"
        uploaded = await session.call_tool("upload_file", {"name": "in.bin", "content": "AAEC",
                                                           "base64_encoded": True})
        assert "/mnt/data/in.bin (3 bytes)" in texts(uploaded)
        assert (await session.call_tool("read_file", {"path": "/mnt/data/in.bin"})).content[0].text == "base64:AAEC"
        ran = await session.call_tool("python", {"code": "print(open('in.bin', 'rb').read())"})
        assert texts(ran).startswith("b'\\x00\\x01\\x02'\n")


async def test_sessions_do_not_share_containers_unless_asked(server: Server) -> None:
    async with mcp_session(server) as one, mcp_session(server) as two:
        mine = await one.call_tool("python", {"code": "secret = 'one'"})
        theirs = await two.call_tool("python", {"code": "print('secret' in dir())"})
        assert texts(theirs).startswith("False\n")
        assert container_of(mine) != container_of(theirs)
        shared = await two.call_tool("python", {"code": "print(secret)", "container_id": container_of(mine)})
        assert texts(shared).startswith("one\n")
    async with mcp_session(server, "key-b") as stranger:
        refused = await stranger.call_tool("python", {"code": "1", "container_id": container_of(mine)})
        assert refused.is_error
        assert "not found" in texts(refused)


def test_mcp_needs_a_key(server: Server) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    check_error(httpx.post(server.url + "/mcp", json=body), 401, "api key")
    check_error(httpx.post(server.url + "/mcp", json=body, headers={"Authorization": "Bearer nope"}), 401, "")


async def test_an_agents_sdk_agent_runs_code_through_mcp(server: Server, upstream: ScriptedUpstream,
                                                         model: str) -> None:
    """The Agents SDK lists Cellbox's MCP tools, offers them to the model (through Cellbox's own Responses API as
    function tools), and runs the model's calls against /mcp. It speaks the stateless revision: each result
    names its container, and a call that passes that container_id back keeps the state."""
    upstream.script(model, {"name": "python", "arguments": json.dumps({"code": "x = 6 * 7\nprint(x)"})},
                    {"text": "It is 42."})
    auth = {"Authorization": "Bearer key-a"}
    async with async_client(server) as openai_client, MCPServerStreamableHttp(
            params={"url": server.url + "/mcp", "headers": auth}, client_session_timeout_seconds=120) as cellbox:
        agent = Agent(name="analyst", instructions="Compute with python.", mcp_servers=[cellbox],
                      model=OpenAIResponsesModel(model=model, openai_client=openai_client))
        result = await Runner.run(agent, "What is six times seven?")
        assert result.final_output == "It is 42."
        requests = upstream.requests(model)
        assert {t["function"]["name"] for t in requests[0]["tools"]} == {"python", "list_files", "upload_file",
                                                                         "read_file"}
        [told] = [m["content"] for m in requests[1]["messages"] if m["role"] == "tool"]
        assert "42" in told
        cid = told.rsplit("container_id: ", 1)[1].split("]", 1)[0]
        again = await cellbox.call_tool("python", {"code": "print(x + 1)", "container_id": cid})
        assert "43" in texts(again)


# --- vLLM's --tool-server for gpt-oss: legacy HTTP+SSE, discovery without a key, one session per request -------

async def test_vllms_tool_server_calls(server: Server) -> None:
    """Exactly what vLLM does (../shared/reference/vllm-tool-server.md): discover at <entry>/sse with no headers,
    read serverInfo.name and instructions; per Responses request, a session with x-session-id (and the headers
    of the request's mcp tool) calling python with {"code"}, reading content[0].text only."""
    url = server.url + "/mcp/sse"  # --tool-server 127.0.0.1:PORT/mcp
    async with sse_client(url=url) as (read, write), ClientSession(read, write) as discovery:
        init = await discovery.initialize()
        assert init.server_info.name == "python"
        assert "stateful" in (init.instructions or "")
        tools = (await discovery.list_tools()).tools
        assert "python" in {tool.name for tool in tools}
        for tool in tools:  # vLLM's trim_schema reads a "type" from every anyOf member
            for prop in tool.input_schema["properties"].values():
                assert all("type" in member for member in prop.get("anyOf", []))
    headers = {"x-session-id": "req-1", "Authorization": "Bearer key-a"}
    async with sse_client(url=url, headers=headers) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        first = await session.call_tool("python", {"code": "import matplotlib.pyplot as plt\nplt.plot([1])\nx = 5"})
        assert first.content[0].type == "text"  # even when the only output is a figure
        second = await session.call_tool("python", {"code": "print(x * 2)"})
        assert second.content[0].text.startswith("10\n")  # one session: one container for the request
    async with sse_client(url=url, headers={**headers, "x-session-id": "req-2"}) as (read, write), \
            ClientSession(read, write) as fresh:
        await fresh.initialize()
        assert "NameError" in (await fresh.call_tool("python", {"code": "x"})).content[0].text
    async with sse_client(url=url, headers={"x-session-id": "req-3"}) as (read, write), \
            ClientSession(read, write) as keyless:
        await keyless.initialize()
        refused = await keyless.call_tool("python", {"code": "1"})
        assert refused.is_error
        assert "api key" in refused.content[0].text.lower()


# --- cellbox mcp: stdio for hosts that start their tools (Claude Desktop), relaying to a running Cellbox ---------

async def test_cellbox_mcp_relays_stdio_to_a_running_server(server: Server) -> None:
    command = StdioServerParameters(command=sys.executable, env=dict(os.environ), args=[
        "-m", "cellbox.cli", "mcp", "--url", server.url, "--api-key", "key-a"])
    async with stdio_client(command) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        assert init.server_info.name == "python"
        assert {tool.name for tool in (await session.list_tools()).tools} >= {"python", "read_file"}
        await session.call_tool("python", {"code": "y = 20"})
        shown = await session.call_tool("python", {"code": PLOT + "\nprint(y + 1)"})
        assert texts(shown).startswith("21\n")  # one relayed session: the state persists
        assert [part.type for part in shown.content] == ["text", "image", "resource_link"]


def test_cellbox_mcp_says_in_one_line_when_it_cannot_reach_the_server() -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "mcp", "--url", "http://127.0.0.1:9"],
                          input="", capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("cellbox mcp: cannot relay to http://127.0.0.1:9/mcp")
    assert done.stderr.count("\n") == 1


async def test_keyless_sse_streams_are_bounded() -> None:
    """The SSE transport opens without a key (vLLM discovers tools with none), so it can't be unbounded."""
    calls: list[int] = []
    sent: list[dict[str, Any]] = []
    release, both_in = asyncio.Event(), asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            both_in.set()
        await release.wait()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    bounded = Bounded(app, limit=2)
    scope = {"type": "http", "method": "GET", "path": "/mcp/sse", "headers": []}
    held = [asyncio.create_task(bounded(scope, None, send)) for _ in range(2)]
    await both_in.wait()
    await bounded(scope, None, send)  # the third is refused at once
    assert sent[0]["status"] == 429
    release.set()
    await asyncio.gather(*held)
    await bounded(scope, None, send)  # room again
    assert len(calls) == 3
