"""The OpenAI Agents SDK (``openai-agents``) runs an agent with its hosted ``CodeInterpreterTool`` against Cellbox.

The agent's model is ``OpenAIResponsesModel`` on an ``AsyncOpenAI`` client pointed at the server under test, so
every model call is ``POST /v1/responses`` to Cellbox, which in turn talks to the scripted upstream. Tracing is
disabled, so nothing leaves loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    CodeInterpreterTool,
    OpenAIResponsesModel,
    RawResponsesStreamEvent,
    RunItemStreamEvent,
    Runner,
    ToolCallItem,
    set_tracing_disabled,
)
from openai.types.responses import ResponseCodeInterpreterToolCall

from tests.integration.api.server import Server, async_client
from tests.upstream import ScriptedUpstream

set_tracing_disabled(True)  # takes precedence over OPENAI_AGENTS_DISABLE_TRACING: no trace export to OpenAI

CODE = "print(6 * 7)"
ANSWER = "The answer is 42."


@pytest.fixture
async def client(server: Server) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_client(server) as sdk:
        yield sdk


def agent(model: str, client: openai.AsyncOpenAI) -> Agent[Any]:
    return Agent(
        name="analyst",
        instructions="Use the python tool to compute, then answer.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
        tools=[CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}})],
    )


def code_calls(items: list[Any]) -> list[ResponseCodeInterpreterToolCall]:
    return [item.raw_item for item in items
            if isinstance(item, ToolCallItem) and isinstance(item.raw_item, ResponseCodeInterpreterToolCall)]


def check_upstream(upstream: ScriptedUpstream, model: str) -> None:
    """Cellbox offered the upstream its python tool, ran the code, and sent back what it printed."""
    assert upstream.remaining(model) == 0
    first, second = upstream.requests(model)
    for request in (first, second):
        assert [tool["function"]["name"] for tool in request["tools"]] == ["python"]
    assert first["messages"][-1] == {"role": "user", "content": "What is six times seven?"}
    calls = [m for m in second["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
    assert [c["function"]["arguments"] for m in calls for c in m["tool_calls"]] == ['{"code": "print(6 * 7)"}']
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1
    assert "42" in tool_messages[0]["content"]
    assert tool_messages[0]["tool_call_id"] == calls[0]["tool_calls"][0]["id"]


async def test_agent_runs_code_interpreter(client: openai.AsyncOpenAI, upstream: ScriptedUpstream,
                                           model: str) -> None:
    upstream.script(model, {"code": CODE}, {"text": ANSWER})

    result = await Runner.run(agent(model, client), "What is six times seven?")

    assert result.final_output == ANSWER, [r.output for r in result.raw_responses]
    [call] = code_calls(result.new_items)
    assert call.code == CODE
    assert call.container_id.startswith("cntr_")
    assert call.status == "completed"
    check_upstream(upstream, model)
    container = await client.containers.retrieve(call.container_id)  # the auto container is a real one
    assert container.id == call.container_id


async def test_agent_streamed_run(client: openai.AsyncOpenAI, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": CODE}, {"text": ANSWER})

    result = Runner.run_streamed(agent(model, client), "What is six times seven?")
    raw: list[str] = []
    tool_called: list[Any] = []
    async for event in result.stream_events():
        if isinstance(event, RawResponsesStreamEvent):
            raw.append(event.data.type)
        elif isinstance(event, RunItemStreamEvent) and event.name == "tool_called":
            tool_called.append(event.item)

    assert result.is_complete
    assert result.final_output == ANSWER, [r.output for r in result.raw_responses]
    assert raw[0] == "response.created"
    assert raw[-1] == "response.completed"
    assert "response.code_interpreter_call.interpreting" in raw
    assert "response.output_text.delta" in raw
    [call] = code_calls(tool_called)
    assert call.code == CODE
    assert call.container_id.startswith("cntr_")
    assert code_calls(result.new_items) == [call]
    check_upstream(upstream, model)
