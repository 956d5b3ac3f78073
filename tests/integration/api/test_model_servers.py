"""The whole Responses loop against each model server's real wire shapes (vLLM with hermes and gpt-oss, Ollama,
llama.cpp, SGLang, OpenAI), streamed and not: reasoning, a python run, a function call handed to the client,
its output, and the answer. The scripted upstream replays each server's chunks as its source writes them."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.api.test_responses import AUTO
from tests.upstream import STYLES, ScriptedUpstream

WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TOOLS = [*AUTO, WEATHER]
READS = {"openai": "reasoning", "vllm-hermes": "reasoning", "vllm-gpt-oss": "reasoning", "ollama": "reasoning",
         "llamacpp": "reasoning_content", "sglang": "reasoning_content"}


def respond(sdk: openai.OpenAI, stream: bool, **body: Any) -> Any:
    if not stream:
        return sdk.responses.create(**body)
    final = None
    for event in sdk.responses.create(stream=True, **body):
        if event.type == "response.completed":
            final = event.response
    assert final is not None
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("style", STYLES)
def test_the_whole_loop_with_each_model_server(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str,
                                               style: str, stream: bool) -> None:
    upstream.script(
        model,
        {"style": style, "reasoning": "Compute first.", "code": "x = 6 * 7\nprint(x)"},
        {"style": style, "reasoning": "Now the weather.", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"style": style, "reasoning": "Both known.", "text": "42, and 14 degrees."},
    )
    first = respond(sdk, stream, model=model, input="6*7 and the weather in Paris?", tools=TOOLS,
                    include=["code_interpreter_call.outputs"])
    assert [item.type for item in first.output] == ["reasoning", "code_interpreter_call", "reasoning",
                                                    "function_call"]
    thought, ran, _, call = first.output
    assert thought.content[0].text == "Compute first."
    assert ran.outputs[0].logs == "42\n"
    assert (call.name, call.arguments, call.status) == ("get_weather", '{"city": "Paris"}', "completed")

    second = respond(sdk, stream, model=model, tools=TOOLS, previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "14 degrees"}])
    assert [item.type for item in second.output] == ["reasoning", "message"]
    assert second.output_text == "42, and 14 degrees."

    requests = upstream.requests(model)
    assert len(requests) == 3
    assistant = [m for m in requests[2]["messages"] if m["role"] == "assistant"]
    assert [m.get(READS[style]) for m in assistant] == ["Compute first.", "Now the weather."]
    other = {"reasoning", "reasoning_content"} - {READS[style]}
    assert not any(other & set(m) for m in assistant)  # only the field this server speaks
    ids = [c["id"] for m in assistant for c in m["tool_calls"]]
    assert len(ids) == 2
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    tools = [m for m in requests[2]["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ids
    assert tools[1]["content"] == "14 degrees"
    assert upstream.remaining(model) == 0


@pytest.mark.parametrize("style", ["vllm-hermes", "vllm-gpt-oss"])
def test_vllms_stop_after_a_named_tool_choice_still_runs_the_call(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                  model: str, style: str) -> None:
    """vLLM ends a forced (named) call with finish_reason "stop", not "tool_calls"."""
    upstream.script(model, {"style": style, "code": "print('ran')"}, {"style": style, "text": "Ran it."})
    response = respond(sdk, True, model=model, input="run", tools=TOOLS, include=["code_interpreter_call.outputs"],
                       tool_choice={"type": "code_interpreter"})
    ran, message = response.output
    assert ran.outputs[0].logs == "ran\n"
    assert message.content[0].text == "Ran it."
    assert upstream.requests(model)[0]["tool_choice"] == {"type": "function", "function": {"name": "python"}}
