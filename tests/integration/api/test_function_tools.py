"""Function tools beside code_interpreter: the client's functions are offered to the model under their own names,
a call ends the response with a ``function_call`` item (after any ``python`` runs of the same turn), and the
client continues with ``function_call_output``, by ``previous_response_id`` or by replaying the whole history."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.integration.api.test_responses import AUTO, OUTPUTS, sse
from tests.upstream import ScriptedUpstream

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Current temperature for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}
PARIS = '{"city": "Paris"}'


def offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools") or []]


def test_the_function_calling_flow_from_openais_docs(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                     model: str) -> None:
    """responses.create -> function_call -> function_call_output with previous_response_id -> the answer."""
    upstream.script(model, {"name": "get_weather", "arguments": PARIS}, {"text": "It is 14 °C in Paris."})
    first = sdk.responses.create(model=model, input="What's the weather in Paris?", tools=[WEATHER])
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call"
    assert (call.name, call.arguments, call.status) == ("get_weather", PARIS, "completed")
    assert call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert first.tools[0].name == "get_weather"
    request = upstream.requests(model)[0]
    assert request["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["parameters"],
        "strict": True}}]
    assert request["tool_choice"] == "auto"

    second = sdk.responses.create(model=model, previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"celsius": 14}'}])
    assert second.output_text == "It is 14 °C in Paris."
    messages = upstream.requests(model)[1]["messages"]
    assert messages[-2]["role"] == "assistant"
    [sent] = messages[-2]["tool_calls"]
    assert sent["function"] == {"name": "get_weather", "arguments": PARIS}
    assert len(sent["id"]) == 9
    assert sent["id"].isalnum()
    assert messages[-1] == {"role": "tool", "tool_call_id": sent["id"], "content": '{"celsius": 14}'}
    listed = sdk.responses.input_items.list(second.id)
    assert [item.type for item in listed.data] == ["function_call_output"]
    assert upstream.remaining(model) == 0


def test_a_replayed_history_with_every_item_kind_continues(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                           model: str) -> None:
    """Without previous_response_id: the client sends everything back, as the Agents SDK does by default.
    Items of tools Cellbox does not serve and reasoning items are accepted and not shown to the model."""
    upstream.script(model, {"name": "get_weather", "arguments": PARIS}, {"text": "14 °C."})
    first = sdk.responses.create(model=model, input="Weather in Paris?", tools=[*AUTO, WEATHER])
    [call] = first.output
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Look it up."}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "paris weather"}},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": [
            {"type": "input_text", "text": "14 degrees"}]},
    ]
    second = sdk.responses.create(model=model, input=history, tools=[*AUTO, WEATHER])
    assert second.output_text == "14 °C."
    messages = upstream.requests(model)[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == "14 degrees"
    assert offered(upstream.requests(model)[1]) == ["python", "get_weather"]
    kinds = [item.type for item in sdk.responses.input_items.list(second.id, order="asc").data]
    assert kinds == ["message", "reasoning", "web_search_call", "function_call", "function_call_output"]


def test_python_runs_first_and_the_function_call_ends_the_response(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                   model: str) -> None:
    """One turn with both kinds of call: the code runs, the function goes to the client, in the model's order;
    the next response keeps the same container."""
    upstream.script(model, {"calls": [{"code": "x = 6 * 7\nprint(x)"},
                                      {"name": "get_weather", "arguments": PARIS}]},
                    {"code": "print(x + 1)"}, {"text": "43, and 14 °C."})
    first = sdk.responses.create(model=model, input="Compute, and get the weather.", tools=[*AUTO, WEATHER],
                                 include=OUTPUTS)
    ran, call = first.output
    assert ran.type == "code_interpreter_call"
    assert ran.outputs[0].logs == "42\n"
    assert call.type == "function_call"
    assert call.status == "completed"
    second = sdk.responses.create(model=model, previous_response_id=first.id, tools=[*AUTO, WEATHER],
                                  include=OUTPUTS, input=[{"type": "function_call_output", "call_id": call.call_id,
                                                           "output": "14"}])
    again, answer = second.output
    assert again.outputs[0].logs == "43\n"  # the same session: x survived
    assert again.container_id == ran.container_id
    assert answer.content[0].text == "43, and 14 °C."
    roles = [m["role"] for m in upstream.requests(model)[1]["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]


def test_function_calls_stream_in_openais_order(http: httpx.Client, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"text": "Checking.", "name": "get_weather", "arguments": PARIS})
    events = sse(http, {"model": model, "input": "Weather?", "tools": [WEATHER]})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas >= 2
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * kinds.count("response.output_text.delta"),
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    added = events[kinds.index("response.output_item.added", 3)]
    assert added["item"]["type"] == "function_call"
    assert added["item"]["status"] == "in_progress"
    assert "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta") == PARIS
    done = events[kinds.index("response.function_call_arguments.done")]
    assert (done["name"], done["arguments"], done["output_index"]) == ("get_weather", PARIS, 1)
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["status"] == "completed"


def test_tool_choices_reach_the_model_server(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    """A forced function is named (several tools) or sent as "required" (the only tool: llama.cpp reads only the
    string form); allowed_tools narrows what is offered; parallel_tool_calls false is passed on."""
    tools = [*AUTO, WEATHER]
    upstream.script(model, *[{"name": "get_weather", "arguments": PARIS}] * 3)
    sdk.responses.create(model=model, input="a", tools=tools, tool_choice={"type": "function", "name": "get_weather"})
    sdk.responses.create(model=model, input="b", tools=[WEATHER], tool_choice={"type": "function",
                                                                              "name": "get_weather"})
    sdk.responses.create(model=model, input="c", tools=tools, parallel_tool_calls=False, tool_choice={
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]})
    named, only, allowed = upstream.requests(model)
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert offered(named) == ["python", "get_weather"]
    assert only["tool_choice"] == "required"
    assert (allowed["tool_choice"], offered(allowed), allowed["parallel_tool_calls"]) == (
        "required", ["get_weather"], False)
    assert "parallel_tool_calls" not in named


def test_a_function_call_under_tool_choice_none_is_not_handed_over(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                   model: str) -> None:
    """A model that calls anyway (some servers ignore "none") is told the call did not happen, and answers."""
    upstream.script(model, {"name": "get_weather", "arguments": PARIS}, {"text": "I can't check the weather."})
    response = sdk.responses.create(model=model, input="Weather?", tools=[WEATHER], tool_choice="none")
    call, message = response.output
    assert call.type == "function_call"
    assert call.status == "incomplete"
    assert message.content[0].text == "I can't check the weather."
    told = upstream.requests(model)[1]["messages"][-1]
    assert told["role"] == "tool"
    assert "not run" in told["content"]
    # The refused call needs no output to go on.
    upstream.script(model, {"text": "ok"})
    assert sdk.responses.create(model=model, input="thanks", previous_response_id=response.id).output_text == "ok"


def test_every_function_call_counts_against_max_tool_calls(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                           model: str) -> None:
    upstream.script(model, {"code": "1"}, {"name": "get_weather", "arguments": PARIS}, {"text": "Out of calls."})
    response = sdk.responses.create(model=model, input="go", tools=[*AUTO, WEATHER], max_tool_calls=1)
    ran, refused, message = response.output
    assert ran.status == "completed"
    assert refused.status == "incomplete"
    assert message.content[0].text == "Out of calls."
    assert json.loads(refused.arguments) == {"city": "Paris"}


def test_item_references_stand_for_stored_items(sdk: openai.OpenAI, other: openai.OpenAI, http: httpx.Client,
                                                upstream: ScriptedUpstream, model: str) -> None:
    """An item_reference names an input or output item of a stored response of the same project; items of another
    project, or of a response made with store=false, are a 400."""
    upstream.script(model, {"name": "get_weather", "arguments": PARIS}, {"text": "14 °C."})
    first = sdk.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
    [call] = first.output
    [asked] = sdk.responses.input_items.list(first.id).data
    second = sdk.responses.create(model=model, tools=[WEATHER], input=[
        {"type": "item_reference", "id": asked.id}, {"type": "item_reference", "id": call.id},
        {"type": "function_call_output", "call_id": call.call_id, "output": "14"}])
    assert second.output_text == "14 °C."
    messages = upstream.requests(model)[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "Weather in Paris?"
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    kinds = [item.type for item in sdk.responses.input_items.list(second.id, order="asc").data]
    assert kinds == ["message", "function_call", "function_call_output"]
    foreign = {"model": model, "input": [{"type": "item_reference", "id": asked.id}]}
    with pytest.raises(openai.BadRequestError, match="names no item stored in this project"):
        other.responses.create(**foreign)
    upstream.script(model, {"text": "not kept"})
    unstored = sdk.responses.create(model=model, input="x", store=False)
    with pytest.raises(openai.BadRequestError, match="names no item stored"):
        sdk.responses.create(model=model, input=[{"type": "item_reference", "id": unstored.output[0].id}])


@pytest.mark.parametrize("extra", [{"caller": {"type": "direct"}}, {"status": None}, {"outputs": None},
                                   {"caller": None, "status": "completed", "outputs": []}],
                         ids=["caller", "status null", "outputs null", "all"])
def test_a_replayed_code_interpreter_call_in_any_shape_continues(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                 model: str, extra: dict[str, Any]) -> None:
    upstream.script(model, {"code": "print(1)"}, {"text": "one"}, {"text": "again"})
    first = sdk.responses.create(model=model, input="go", tools=AUTO, include=OUTPUTS)
    ran = {**first.output[0].model_dump(exclude_none=True), **extra}
    second = sdk.responses.create(model=model, tools=AUTO, input=[
        {"role": "user", "content": "go"}, ran, {"role": "assistant", "content": "one"},
        {"role": "user", "content": "and?"}])
    assert second.output_text == "again"
    assert [m["role"] for m in upstream.requests(model)[2]["messages"]] == ["user", "assistant", "tool",
                                                                            "assistant", "user"]
