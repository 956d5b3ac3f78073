"""The real ``Upstream`` client against the scripted model server, streamed and not: events, merging, failures."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cellbox.errors import UpstreamRejected, UpstreamUnavailable
from cellbox.services import upstream as upstream_module
from cellbox.services.upstream import (
    TRANSIENT,
    ArgumentsDelta,
    CallStarted,
    Event,
    ReasoningDelta,
    TextDelta,
    Turn,
    Upstream,
    for_server,
)
from tests.upstream import ScriptedUpstream

BOTH = pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
QUICK = (0.01, 0.01)  # retry pauses: the behaviour, not the wait, is under test


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as running:
        yield running


@pytest.fixture
async def upstream(scripted: ScriptedUpstream) -> AsyncIterator[Upstream]:
    client = Upstream(scripted.url, "", {}, timeout=30, retry_pauses=QUICK)
    yield client
    await client.aclose()


@pytest.fixture
def model() -> str:
    return f"model-{uuid.uuid4().hex[:12]}"


async def _events(upstream: Upstream, model: str, stream: bool, **extra: Any) -> list[Event]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return [event async for event in upstream.turn(body, stream)]


async def _drain(events: AsyncIterator[Event], into: list[Event]) -> None:
    async for event in events:
        into.append(event)


def _turn(events: list[Event]) -> Turn:
    """The last event is the Turn, and it is the only one."""
    assert isinstance(events[-1], Turn)
    assert not any(isinstance(e, Turn) for e in events[:-1])
    return events[-1]


def _text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _arguments(events: list[Event], index: int) -> str:
    return "".join(e.text for e in events if isinstance(e, ArgumentsDelta) and e.index == index)


def _check_calls_announced_before_their_arguments(events: list[Event]) -> None:
    started: set[int] = set()
    for event in events:
        if isinstance(event, CallStarted):
            assert event.index not in started
            assert event.index == len(started)
            started.add(event.index)
        elif isinstance(event, ArgumentsDelta):
            assert event.index in started


# ----------------------------------------------------------------------------------------------------- replies


@BOTH
async def test_text_only(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    text = "The answer is 42, as computed."
    scripted.script(model, {"text": text})
    events = await _events(upstream, model, stream)
    turn = _turn(events)
    assert turn.text == text
    assert _text(events) == text
    assert turn.calls == []
    assert turn.finish_reason == "stop"
    assert not any(isinstance(e, CallStarted | ArgumentsDelta) for e in events)
    if stream:
        assert sum(isinstance(e, TextDelta) for e in events) > 1  # it really arrived in pieces


@BOTH
async def test_one_tool_call(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    code = 'import math\nprint("pi =", math.pi)\n'
    scripted.script(model, {"text": "Let me compute.", "code": code})
    events = await _events(upstream, model, stream)
    turn = _turn(events)
    assert turn.text == "Let me compute." == _text(events)
    assert [e for e in events if isinstance(e, CallStarted)] == [CallStarted(0, "python")]
    _check_calls_announced_before_their_arguments(events)
    [call] = turn.calls
    assert call.name == "python"
    assert call.id.startswith("call_")
    assert json.loads(call.arguments) == {"code": code}
    assert _arguments(events, 0) == call.arguments
    assert turn.finish_reason == "tool_calls"
    if stream:
        assert sum(isinstance(e, ArgumentsDelta) for e in events) > 1


@BOTH
async def test_two_calls_in_one_reply(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                      stream: bool) -> None:
    scripted.script(model, {"calls": [{"code": "a = 1\nprint(a)"},
                                      {"name": "other_tool", "arguments": '{"query": "two"}'}]})
    events = await _events(upstream, model, stream)
    turn = _turn(events)
    assert [e for e in events if isinstance(e, CallStarted)] == [CallStarted(0, "python"), CallStarted(1, "other_tool")]
    _check_calls_announced_before_their_arguments(events)
    assert [(c.name, c.arguments) for c in turn.calls] == [
        ("python", json.dumps({"code": "a = 1\nprint(a)"})), ("other_tool", '{"query": "two"}')]
    assert turn.calls[0].id != turn.calls[1].id
    assert all(c.id for c in turn.calls)
    assert [_arguments(events, 0), _arguments(events, 1)] == [c.arguments for c in turn.calls]
    assert turn.text == ""


@BOTH
@pytest.mark.parametrize("variant", ["whole", "no_index"])
async def test_fragment_variants_merge_the_same(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                stream: bool, variant: str) -> None:
    """Servers that send each call in one fragment, or fragments without an index, still give whole calls."""
    codes = ["x = 'first call, long enough to span several fragments'", "y = 'second'\nprint(y)"]
    scripted.script(model, {"text": "Two runs.", "calls": [{"code": c} for c in codes], variant: True})
    events = await _events(upstream, model, stream)
    turn = _turn(events)
    assert [json.loads(c.arguments)["code"] for c in turn.calls] == codes
    assert [e for e in events if isinstance(e, CallStarted)] == [CallStarted(0, "python"), CallStarted(1, "python")]
    _check_calls_announced_before_their_arguments(events)
    assert [_arguments(events, 0), _arguments(events, 1)] == [c.arguments for c in turn.calls]
    assert turn.text == "Two runs."
    assert len({c.id for c in turn.calls}) == 2


@BOTH
async def test_usage(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    scripted.script(model, {"text": "ok", "usage": {"prompt_tokens": 50, "completion_tokens": 7,
                                                    "cached_tokens": 20, "reasoning_tokens": 3}})
    usage = _turn(await _events(upstream, model, stream)).usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (50, 7, 57)
    assert usage.input_tokens_details.cached_tokens == 20
    assert usage.output_tokens_details.reasoning_tokens == 3


@BOTH
async def test_finish_reason_length(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                    stream: bool) -> None:
    scripted.script(model, {"text": "This answer was cut sh", "finish_reason": "length"})
    turn = _turn(await _events(upstream, model, stream))
    assert turn.finish_reason == "length"
    assert turn.text == "This answer was cut sh"


# ----------------------------------------------------------------------------------------------------- requests


@BOTH
async def test_the_request_body(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    scripted.script(model, {"text": "ok"})
    tools = [{"type": "function", "function": {"name": "python", "parameters": {"type": "object"}}}]
    await _events(upstream, model, stream, tools=tools, temperature=0.2)
    [sent] = scripted.requests(model)
    assert sent["model"] == model
    assert sent["stream"] is stream
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["tools"] == tools
    assert sent["temperature"] == 0.2
    if stream:
        assert sent["stream_options"] == {"include_usage": True}
    else:
        assert "stream_options" not in sent


async def test_the_callers_body_is_not_changed(upstream: Upstream, scripted: ScriptedUpstream, model: str) -> None:
    scripted.script(model, {"text": "ok"})
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    [event async for event in upstream.turn(body, True)]
    assert body == {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@BOTH
async def test_the_api_key_is_sent_as_a_bearer_token(scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    scripted.script(model, {"text": "ok"})
    client = Upstream(scripted.url, "sk-test-123", {}, timeout=30, retry_pauses=QUICK)
    try:
        await _events(client, model, stream)
    finally:
        await client.aclose()
    [headers] = scripted.headers(model)
    assert headers["authorization"] == "Bearer sk-test-123"


async def test_no_api_key_no_authorization_header(upstream: Upstream, scripted: ScriptedUpstream, model: str) -> None:
    scripted.script(model, {"text": "ok"})
    await _events(upstream, model, False)
    [headers] = scripted.headers(model)
    assert "authorization" not in headers


async def test_an_alias_names_the_upstream_model(scripted: ScriptedUpstream, model: str) -> None:
    target = f"{model}-real"
    scripted.script(target, {"text": "from the alias"})
    client = Upstream(scripted.url, "", {"gpt-4.1": target}, timeout=30, retry_pauses=QUICK)
    try:
        turn = _turn(await _events(client, "gpt-4.1", True))
    finally:
        await client.aclose()
    assert turn.text == "from the alias"
    assert [r["model"] for r in scripted.requests(target)] == [target]
    assert scripted.remaining(target) == 0


async def test_a_star_alias_catches_every_other_model(scripted: ScriptedUpstream, model: str) -> None:
    star, named = f"{model}-star", f"{model}-named"
    scripted.script(star, {"text": "star"}, {"text": "star again"})
    scripted.script(named, {"text": "named"})
    client = Upstream(scripted.url, "", {"*": star, "special": named}, timeout=30, retry_pauses=QUICK)
    try:
        texts = [_turn(await _events(client, requested, False)).text for requested in ("gpt-4o", model, "special")]
    finally:
        await client.aclose()
    assert texts == ["star", "star again", "named"]
    assert client.model_for("anything") == star
    assert client.model_for("special") == named


async def test_a_model_without_an_alias_is_sent_as_named(scripted: ScriptedUpstream) -> None:
    client = Upstream(scripted.url + "/", "", {"a": "b"}, timeout=30, retry_pauses=QUICK)
    try:
        assert client.model_for("a") == "b"
        assert client.model_for("c") == "c"
        assert client.configured
        assert client.base_url == scripted.url
    finally:
        await client.aclose()


# ----------------------------------------------------------------------------------------------------- failures


@BOTH
async def test_a_400_is_rejected(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    scripted.script(model, {"status": 400, "error": "This model's maximum context length is 8192 tokens"})
    with pytest.raises(UpstreamRejected, match="maximum context length") as caught:
        await _events(upstream, model, stream)
    assert "400" in str(caught.value)


@BOTH
@pytest.mark.parametrize("status", [500, 401, 429, 503])
async def test_server_auth_and_rate_errors_are_unavailable(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                           stream: bool, status: int) -> None:
    scripted.script(model, *[{"status": status, "error": f"scripted failure {status}"}] * 3)
    with pytest.raises(UpstreamUnavailable, match=f"{status}.*scripted failure {status}"):
        await _events(upstream, model, stream)
    busy = status in TRANSIENT
    assert len(scripted.requests(model)) == (3 if busy else 1)  # a busy server is asked three times, others once


@BOTH
async def test_a_briefly_busy_server_is_asked_again(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                    stream: bool) -> None:
    scripted.script(model, {"status": 503, "error": "loading"}, {"status": 429, "error": "slow down"},
                    {"text": "ready"})
    assert _turn(await _events(upstream, model, stream)).text == "ready"


async def test_an_unknown_model_is_rejected(upstream: Upstream, model: str) -> None:
    """Nothing scripted: the server answers 400, as real servers do for a model they don't serve."""
    with pytest.raises(UpstreamRejected, match=model):
        await _events(upstream, model, True)


@BOTH
async def test_a_dropped_connection_is_unavailable(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                   stream: bool) -> None:
    scripted.script(model, {"text": "this reply is long enough to be cut off part way", "drop": True})
    events: list[Event] = []
    with pytest.raises(UpstreamUnavailable):
        await _drain(upstream.turn({"model": model, "messages": []}, stream), events)
    assert not any(isinstance(e, Turn) for e in events)
    assert all(isinstance(e, TextDelta) for e in events)  # whatever arrived before the drop, and no more


@BOTH
async def test_the_client_still_works_after_a_drop(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                   stream: bool) -> None:
    scripted.script(model, {"text": "lost", "drop": True}, {"text": "fine"})
    with pytest.raises(UpstreamUnavailable):
        await _events(upstream, model, stream)
    assert _turn(await _events(upstream, model, stream)).text == "fine"


@BOTH
async def test_a_closed_port_is_unavailable(model: str, stream: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Upstream(f"http://127.0.0.1:{port}/v1", "", {}, timeout=5, retry_pauses=QUICK)
    try:
        with pytest.raises(UpstreamUnavailable, match=f"127.0.0.1:{port}"):
            await _events(client, model, stream)
    finally:
        await client.aclose()


@BOTH
async def test_a_slow_server_is_unavailable(scripted: ScriptedUpstream, model: str, stream: bool) -> None:
    scripted.script(model, {"text": "too late", "delay": 2})
    client = Upstream(scripted.url, "", {}, timeout=0.5, retry_pauses=QUICK)
    try:
        with pytest.raises(UpstreamUnavailable, match="did not answer in time"):
            await _events(client, model, stream)
    finally:
        await client.aclose()


async def test_a_whole_call_in_one_long_stream_line_arrives(upstream: Upstream, scripted: ScriptedUpstream,
                                                            model: str) -> None:
    """Servers that send a tool call whole put all of its code on one SSE line: far longer than aiohttp's own
    default line limit (128 KiB) must still arrive."""
    code = "x = 1\n" * 100_000  # 600 kB of code on one line of the stream
    scripted.script(model, {"code": code, "whole": True})
    [call] = _turn(await _events(upstream, model, True)).calls
    assert json.loads(call.arguments) == {"code": code}


async def test_a_stream_line_over_the_limit_is_unavailable(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "MAX_LINE", 4096)
    scripted.script(model, {"code": "x = 1\n" * 2000, "whole": True}, {"text": "fine"})
    with pytest.raises(UpstreamUnavailable, match="sent a stream line over"):
        await _events(upstream, model, True)
    assert _turn(await _events(upstream, model, True)).text == "fine"  # the client goes on working


async def test_a_whole_reply_over_the_limit_is_unavailable(upstream: Upstream, scripted: ScriptedUpstream, model: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "MAX_REPLY", 4096)
    scripted.script(model, {"text": "y" * 10_000}, {"status": 400, "error": "z" * 10_000})
    with pytest.raises(UpstreamUnavailable, match="sent a reply over"):
        await _events(upstream, model, False)
    with pytest.raises(UpstreamUnavailable, match="sent a reply over"):  # an error body is bounded too
        await _events(upstream, model, False)


async def test_the_proxy_of_the_servers_environment_is_used(scripted: ScriptedUpstream, model: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY pointing at a closed port makes the model server unreachable; NO_PROXY for it makes it
    reachable again: the environment is read, as for any HTTP client an operator configures that way."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    scripted.script(model, {"text": "through"})
    client = Upstream(scripted.url, "", {}, timeout=5, retry_pauses=QUICK)
    try:
        with pytest.raises(UpstreamUnavailable, match="unreachable"):
            await _events(client, model, True)
        assert scripted.requests(model) == []
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert _turn(await _events(client, model, True)).text == "through"
    finally:
        await client.aclose()


@BOTH
async def test_an_unconfigured_upstream_is_rejected(model: str, stream: bool) -> None:
    client = Upstream("", "key", {}, timeout=5, retry_pauses=QUICK)
    try:
        assert not client.configured
        with pytest.raises(UpstreamRejected, match="CELLBOX_UPSTREAM_BASE_URL"):
            await _events(client, model, stream)
    finally:
        await client.aclose()


async def test_the_unconfigured_message_is_plain_text(model: str) -> None:
    client = Upstream("", "", {}, timeout=5, retry_pauses=QUICK)
    try:
        with pytest.raises(UpstreamRejected) as caught:
            await _events(client, model, True)
    finally:
        await client.aclose()
    assert str(caught.value).startswith("no model server is configured")


@pytest.mark.parametrize(("base_url", "field"), [
    ("https://api.openai.com/v1", "max_completion_tokens"),
    ("https://mine.openai.azure.com/openai/v1", "max_completion_tokens"),
    ("http://127.0.0.1:11434/v1", "max_tokens"),
    ("http://vllm.internal:8000/v1", "max_tokens"),
])
def test_each_server_gets_the_output_limit_under_the_name_it_knows(base_url: str, field: str) -> None:
    body = for_server(base_url, {"model": "m", "messages": [], "max_tokens": 64})
    assert body[field] == 64
    assert set(body) == {"model", "messages", field}
    assert for_server(base_url, {"model": "m"}) == {"model": "m"}


# --------------------------------------------------------------------------------------------------- reasoning

@BOTH
@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
async def test_reasoning_in_either_field(upstream: Upstream, scripted: ScriptedUpstream, model: str, stream: bool,
                                         field: str) -> None:
    scripted.script(model, {"reasoning": "Think first.", "reasoning_field": field, "text": "Then answer."})
    events = await _events(upstream, model, stream)
    turn = _turn(events)
    assert (turn.reasoning, turn.text) == ("Think first.", "Then answer.")
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Think first."
    first_text = next(n for n, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(n < first_text for n, e in enumerate(events) if isinstance(e, ReasoningDelta))


async def test_reasoning_goes_back_under_both_fields_until_the_server_shows_its_own(
        upstream: Upstream, scripted: ScriptedUpstream, model: str) -> None:
    thought = {"role": "assistant", "content": None, "reasoning": "earlier"}
    scripted.script(model, {"reasoning": "now", "reasoning_field": "reasoning_content", "text": "a"}, {"text": "b"})
    await _events(upstream, model, False, messages=[thought, {"role": "user", "content": "go"}])
    await _events(upstream, model, False, messages=[thought, {"role": "user", "content": "go"}])
    unknown, learned = (request["messages"][0] for request in scripted.requests(model))
    assert unknown == {"role": "assistant", "content": None, "reasoning": "earlier", "reasoning_content": "earlier"}
    assert learned == {"role": "assistant", "content": None, "reasoning_content": "earlier"}


def test_openais_own_api_gets_no_reasoning_field() -> None:
    client = Upstream("https://api.openai.com/v1", "k", {}, timeout=5)
    message = {"role": "assistant", "content": "x", "reasoning": "y"}
    assert client._with_reasoning_field(message) == {"role": "assistant", "content": "x"}
