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
    function_tool,
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


# --- an agent with function tools and a handoff beside the code interpreter ------------------------------------

@function_tool
def get_weather(city: str) -> str:
    """The temperature in a city."""
    return f"14 degrees in {city}"


@function_tool
def to_fahrenheit(celsius: float) -> str:
    """Celsius to Fahrenheit, as text."""
    return f"{celsius * 9 / 5 + 32:g} F"


REPORT = "Paris: 14 °C (57.2 °F), checked twice."


def team(model: str, client: openai.AsyncOpenAI) -> Agent[Any]:
    reporter = Agent(name="reporter", instructions="Write the report.",
                     model=OpenAIResponsesModel(model=model, openai_client=client))
    return Agent(
        name="analyst",
        instructions="Look the weather up, compute with python, then hand over to the reporter.",
        model=OpenAIResponsesModel(model=model, openai_client=client),
        tools=[CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}}),
               get_weather, to_fahrenheit],
        handoffs=[reporter],
    )


def script_team(upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(
        model,
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"code": "t = 14\nprint(t * 9 / 5 + 32)"},
        {"name": "to_fahrenheit", "arguments": '{"celsius": 14}'},
        {"code": "print(t)"},  # the same session: t is still there
        {"name": "transfer_to_reporter", "arguments": "{}"},
        {"text": REPORT},
    )


def check_team(upstream: ScriptedUpstream, model: str, items: list[Any]) -> None:
    assert upstream.remaining(model) == 0
    requests = upstream.requests(model)
    assert [sorted(t["function"]["name"] for t in r.get("tools") or []) for r in requests[:5]] == [
        ["get_weather", "python", "to_fahrenheit", "transfer_to_reporter"]] * 5
    assert "tools" not in requests[5]  # the reporter has none
    told = [m["content"] for r in requests for m in r["messages"] if m["role"] == "tool"]
    assert "14 degrees in Paris" in told
    assert "57.2 F" in told
    assert "57.2\n" in told  # what python printed
    calls = code_calls(items)
    assert [c.code for c in calls] == ["t = 14\nprint(t * 9 / 5 + 32)", "print(t)"]
    assert len({c.container_id for c in calls}) == 1


@pytest.mark.parametrize("chained", [False, True], ids=["full history", "previous_response_id"])
async def test_an_agent_with_function_tools_and_a_handoff(client: openai.AsyncOpenAI, upstream: ScriptedUpstream,
                                                          model: str, chained: bool) -> None:
    script_team(upstream, model)
    result = await Runner.run(team(model, client), "Weather in Paris, in both units?",
                              auto_previous_response_id=chained)
    assert result.final_output == REPORT, [r.output for r in result.raw_responses]
    assert result.last_agent.name == "reporter"
    check_team(upstream, model, result.new_items)
    last = await client.responses.retrieve(result.raw_responses[-1].response_id)
    assert (last.previous_response_id is not None) == chained


async def test_an_agent_with_function_tools_and_a_handoff_streamed(client: openai.AsyncOpenAI,
                                                                   upstream: ScriptedUpstream, model: str) -> None:
    script_team(upstream, model)
    result = Runner.run_streamed(team(model, client), "Weather in Paris, in both units?")
    raw: list[str] = []
    async for event in result.stream_events():
        if isinstance(event, RawResponsesStreamEvent):
            raw.append(event.data.type)
    assert result.final_output == REPORT
    assert "response.function_call_arguments.delta" in raw
    assert "response.code_interpreter_call.interpreting" in raw
    check_team(upstream, model, result.new_items)


async def test_an_agent_in_a_conversation(client: openai.AsyncOpenAI, upstream: ScriptedUpstream, model: str) -> None:
    """The SDK's conversation_id flow: each model call sends only the new items; Cellbox keeps the rest."""
    conversation = await client.conversations.create()
    script_team(upstream, model)
    result = await Runner.run(team(model, client), "Weather in Paris, in both units?",
                              conversation_id=conversation.id)
    assert result.final_output == REPORT, [r.output for r in result.raw_responses]
    check_team(upstream, model, result.new_items)
    kinds = [item.type async for item in client.conversations.items.list(conversation.id, order="asc")]
    assert kinds.count("code_interpreter_call") == 2
    assert kinds.count("function_call_output") == 3  # two functions and the handoff
    assert kinds[-1] == "message"
