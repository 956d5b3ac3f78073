"""Reasoning models: the chain of thought a model server sends becomes a ``reasoning`` output item before what
it led to, streams as ``response.reasoning_text.*``, and goes back to the server on the assistant message, in the
field that server uses, so it continues its thought across tool turns and replayed conversations."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.api.test_responses import AUTO, sse
from tests.upstream import ScriptedUpstream

THINK = "The user wants 6*7; I should run it."
AGAIN = "It printed 42; answer."


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_becomes_an_item_and_goes_back_in_the_servers_field(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                      model: str, field: str) -> None:
    upstream.script(model, {"reasoning": THINK, "reasoning_field": field, "code": "print(6 * 7)"},
                    {"reasoning": AGAIN, "reasoning_field": field, "text": "42.",
                     "usage": {"reasoning_tokens": 7}})
    response = sdk.responses.create(model=model, input="6*7?", tools=AUTO, reasoning={"effort": "high"})
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    first, _, second, _ = response.output
    assert first.content[0].type == "reasoning_text"
    assert first.content[0].text == THINK
    assert second.content[0].text == AGAIN
    assert first.summary == []
    assert response.usage.output_tokens_details.reasoning_tokens == 7
    one, two = upstream.requests(model)
    assert one["reasoning_effort"] == "high"
    [call_turn] = [m for m in two["messages"] if m["role"] == "assistant"]
    assert call_turn[field] == THINK  # the field this server sent it in, and no other
    assert {"reasoning", "reasoning_content"} - {field} & set(call_turn) == set()


def test_reasoning_streams_before_the_call(http: httpx.Client, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"reasoning": THINK, "code": "1"}, {"text": "Done."})
    events = sse(http, {"model": model, "input": "go", "tools": AUTO})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.reasoning_text.delta")
    assert deltas >= 2
    assert kinds[2:7 + deltas] == [
        "response.output_item.added", "response.content_part.added",
        *["response.reasoning_text.delta"] * deltas,
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[7 + deltas] == "response.output_item.added"  # then the call
    assert events[7 + deltas]["item"]["type"] == "code_interpreter_call"
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == THINK
    assert events[2]["item"]["type"] == "reasoning"
    assert events[-1]["response"]["output"][0]["content"] == [{"type": "reasoning_text", "text": THINK}]


def test_replayed_reasoning_reaches_the_next_assistant_message(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                model: str) -> None:
    """By previous_response_id and by the whole history: the thought sits on the assistant turn it led to."""
    upstream.script(model, {"reasoning": THINK, "code": "x = 1"}, {"text": "Set."},
                    {"text": "Again."}, {"text": "And again."})
    first = sdk.responses.create(model=model, input="set x", tools=AUTO)
    sdk.responses.create(model=model, input="next", tools=AUTO, previous_response_id=first.id)
    history = [{"role": "user", "content": "set x"}, *[item.model_dump(exclude_none=True) for item in first.output],
               {"role": "user", "content": "next"}]
    sdk.responses.create(model=model, input=history, tools=AUTO)
    for request in upstream.requests(model)[2:]:
        calls = [m for m in request["messages"] if m.get("tool_calls")]
        assert len(calls) == 1
        assert calls[0]["reasoning"] == THINK  # this server has shown it speaks "reasoning"
        assert "reasoning_content" not in calls[0]
