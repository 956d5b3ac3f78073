"""Responses that go wrong: the upstream fails, the model sends bad tool calls, the code times out or crashes, the
container expires, the request is malformed. Each ends cleanly with a clear error and keeps what was made."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.api.server import Server, check_error, client, raw
from tests.integration.api.test_responses import AUTO, OUTPUTS, sse
from tests.upstream import ScriptedUpstream, _free_port


def test_an_upstream_error_before_anything_is_made_is_an_http_error(sdk: openai.OpenAI, http: httpx.Client,
                                                                   upstream: ScriptedUpstream, model: str) -> None:
    data = sdk.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="user_data")
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}}]
    before = {c.id for c in sdk.containers.list(limit=100)}
    upstream.script(model, *[{"status": 500, "error": "the GPU caught fire"}] * 3)  # asked three times
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model=model, tools=tools, input="hi")
    assert failed.value.status_code == 502
    assert "GPU caught fire" in failed.value.message
    upstream.script(model, {"status": 404, "error": "model 'nope' not found"})
    error = check_error(http.post("/v1/responses", json={"model": model, "input": "hi"}), 400, "not found")
    assert error["code"] == "upstream_error"
    # The auto container made for the files went again: a failed request leaves nothing behind.
    assert {c.id for c in sdk.containers.list(limit=100)} == before


def test_an_upstream_failure_after_a_code_run_keeps_the_run(sdk: openai.OpenAI, http: httpx.Client,
                                                            upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": "print('kept')"}, *[{"status": 503, "error": "overloaded"}] * 3)
    response = sdk.responses.create(model=model, tools=AUTO, input="go", include=OUTPUTS)
    assert response.status == "failed"
    assert response.error is not None
    assert response.error.code == "server_error"
    assert "overloaded" in response.error.message
    [call] = response.output
    assert call.status == "completed"
    assert call.outputs[0].logs == "kept\n"
    assert sdk.responses.retrieve(response.id).status == "failed"
    with pytest.raises(openai.BadRequestError, match="background"):
        sdk.responses.cancel(response.id)

    upstream.script(model, {"code": "print('kept')"}, {"text": "partial answer", "drop": True})
    events = sse(http, {"model": model, "tools": AUTO, "input": "go"})
    assert events[-1]["type"] == "response.failed"
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert "closed the stream" in final["error"]["message"]
    assert [(i["type"], i["status"]) for i in final["output"]] == [("code_interpreter_call", "completed"),
                                                                   ("message", "incomplete")]
    assert final["output"][1]["content"][0]["text"] == "par"  # what arrived before the cut


def test_a_model_server_that_is_briefly_busy_is_asked_again(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                             model: str) -> None:
    upstream.script(model, {"code": "print('once')"}, {"status": 503, "error": "loading"}, {"text": "Fine."})
    response = sdk.responses.create(model=model, tools=AUTO, input="go", include=OUTPUTS)
    assert response.status == "completed"
    assert response.output_text == "Fine."
    assert [i.type for i in response.output] == ["code_interpreter_call", "message"]  # the code ran once
    assert len(upstream.requests(model)) == 3


def test_a_dropped_stream_on_the_first_turn_fails_the_stream_cleanly(http: httpx.Client, upstream: ScriptedUpstream,
                                                                      model: str) -> None:
    upstream.script(model, {"text": "I will write a long answer that never ends", "drop": True})
    events = sse(http, {"model": model, "input": "go"})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.failed"
    assert "response.output_item.done" in kinds  # the half-written message is closed, marked incomplete
    final = events[-1]["response"]
    assert final["output"][0]["status"] == "incomplete"


def test_malformed_tool_arguments_go_back_to_the_model(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                       model: str) -> None:
    upstream.script(model, {"arguments": '{"code": "print(1)'}, {"arguments": '{"language": 3}'},
                    {"arguments": "print('raw code works too')"}, {"text": "Recovered."})
    response = sdk.responses.create(model=model, tools=AUTO, input="go", include=OUTPUTS)
    assert response.status == "completed"
    assert response.output_text == "Recovered."
    bad_json, no_code, raw_code, _ = response.output
    assert bad_json.status == "failed"
    assert "not valid JSON" in bad_json.outputs[0].logs
    assert no_code.status == "failed"
    assert "'code'" in no_code.outputs[0].logs
    assert raw_code.status == "completed"
    assert raw_code.outputs[0].logs == "raw code works too\n"
    told = upstream.requests(model)[1]["messages"][-1]
    assert told["role"] == "tool"
    assert "not valid JSON" in told["content"]


def test_code_that_crashes_the_session_fails_the_call_not_the_response(sdk: openai.OpenAI,
                                                                       upstream: ScriptedUpstream,
                                                                       model: str) -> None:
    upstream.script(model, {"code": "import os\nos._exit(3)"}, {"code": "print('alive')"}, {"text": "Back."})
    response = sdk.responses.create(model=model, tools=AUTO, input="go", include=OUTPUTS)
    crashed, alive, _ = response.output
    assert crashed.status == "failed"
    assert alive.status == "completed"
    assert alive.outputs[0].logs == "alive\n"
    told = upstream.requests(model)[1]["messages"][-1]["content"]
    assert "The Python session exited; the session was restarted" in told


def test_the_tool_call_budget_bounds_the_loop(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": "1"}, {"code": "2"}, {"text": "Stopping."})
    response = sdk.responses.create(model=model, tools=AUTO, input="loop forever", max_tool_calls=1,
                                    include=OUTPUTS)
    first, second, message = response.output
    assert first.status == "completed"
    assert second.status == "failed"
    assert "limit of 1" in second.outputs[0].logs
    assert message.content[0].text == "Stopping."
    requests = upstream.requests(model)
    assert [r.get("tool_choice") for r in requests] == ["auto", "none", None]  # after a refusal: no tool at all
    assert "tools" not in requests[2]
    assert response.max_tool_calls == 1


def test_an_expired_container_is_a_clear_error(server: Server, sdk: openai.OpenAI, http: httpx.Client,
                                               upstream: ScriptedUpstream, model: str) -> None:
    box = sdk.containers.create(name="old")
    with sqlite3.connect(server.data_dir / "cellbox.db") as db:
        db.execute("UPDATE containers SET last_active_at = last_active_at - 3600 WHERE id = ?", (box.id,))
    body = {"model": model, "input": "go", "tools": [{"type": "code_interpreter", "container": box.id}]}
    check_error(http.post("/v1/responses", json=body), 400, "expired")
    check_error(http.post("/v1/responses", json={**body, "stream": True}), 400, "expired")
    assert upstream.requests(model) == []  # the model was never asked


@pytest.mark.parametrize("chained", [True, False], ids=["previous_response_id", "full history"])
def test_an_expired_auto_container_is_replaced_and_the_model_told(server: Server, sdk: openai.OpenAI,
                                                                  upstream: ScriptedUpstream, model: str,
                                                                  chained: bool) -> None:
    """The conversation goes on in a new container with the request's files copied in again, instead of failing
    for good; the model learns that its variables and files are gone."""
    data = sdk.files.create(file=("data.csv", b"a\n1\n"), purpose="user_data")
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}}]
    upstream.script(model, {"code": "x = 1"}, {"text": "a"}, {"code": "print(open('data.csv').read())"},
                    {"text": "b"})
    first = sdk.responses.create(model=model, tools=tools, input="one")
    old = first.output[0].container_id
    with sqlite3.connect(server.data_dir / "cellbox.db") as db:
        db.execute("UPDATE containers SET last_active_at = last_active_at - 3600 WHERE id = ?", (old,))
    if chained:
        second = sdk.responses.create(model=model, tools=tools, input="two", previous_response_id=first.id,
                                      include=["code_interpreter_call.outputs"])
    else:
        history = [{"role": "user", "content": "one"}, *[i.model_dump(exclude_none=True) for i in first.output],
                   {"role": "user", "content": "two"}]
        second = sdk.responses.create(model=model, tools=tools, input=history,
                                      include=["code_interpreter_call.outputs"])
    assert second.status == "completed"
    ran = second.output[0]
    assert ran.container_id != old
    assert ran.outputs[0].logs == "a\n1\n\n"  # the file is there again
    told = upstream.requests(model)[3]["messages"][-1]["content"]  # the tool result of the new run
    assert f"the earlier container {old} expired" in told
    assert "variables, imports and files from before are gone" in told


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"input": "x"}, 400, "model"),
    ({"model": "m", "input": "x", "tools": [*AUTO, {"type": "function", "name": "python"}]}, 400, "named 'python'"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}] * 2}, 400, "two function tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "no spaces"}]}, 400, "tools.0.name"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "function", "name": "g"}}, 400, "'g'"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "code_interpreter"}]}}, 400,
     "code_interpreter tool"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}]},
     400, "No tool output found for function call call_1"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "call_2", "output": "x"}]},
     400, "No tool call found for function call output with call_id call_2"),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, 400, "code_interpreter"),
    ({"model": "m", "input": "x", "tools": AUTO * 2}, 400, "at most one"),
    ({"model": "m", "input": "x", "tool_choice": "required"}, 400, "tools has none"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "f"}}, 400, "tool_choice"),
    ({"model": "m", "input": "x", "include": ["nonsense"]}, 400, "include"),
    ({"model": "m", "input": "x", "metadata": {str(n): "v" for n in range(17)}}, 400, "16"),
    ({"model": "m", "input": "x", "metadata": {"k": "v" * 513}}, 400, "512"),
    ({"model": "m", "input": "x", "background": True, "store": False}, 400, "store=true"),
    ({"model": "m", "input": "x", "conversation": "conv_1"}, 404, "conv_1"),
    ({"model": "m", "input": "x", "conversation": {"id": "conv_1"}, "previous_response_id": "resp_1"}, 400,
     "cannot both"),
    ({"model": "m", "input": "x", "temperature": 3}, 400, "temperature"),
    ({"model": "m", "input": "x", "previous_response_id": "resp_nope"}, 404, "resp_nope"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "item_reference"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a"}]}],
      "tools": AUTO}, 400, "file_url"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-nope"}]}],
      "tools": AUTO}, 404, "file-nope"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     400, "code_interpreter tool"),
    ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter", "container": "cntr_nope"}]}, 404,
     "cntr_nope"),
    ({"model": "m", "input": "x", "tools": [{"type": "code_interpreter", "container": {
        "type": "auto", "network_policy": {"type": "allowlist", "allowed_domains": ["pypi.org"]}}}]}, 400,
     "network access is turned off"),
])
def test_bad_requests_are_clear_4xx_errors(http: httpx.Client, body: dict[str, Any], status: int,
                                           fragment: str) -> None:
    check_error(http.post("/v1/responses", json=body), status, fragment)


def test_retrieve_options_are_checked(http: httpx.Client) -> None:
    check_error(http.get("/v1/responses/resp_nope"), 404, "resp_nope")
    check_error(http.get("/v1/responses/resp_nope", params={"stream": "true"}), 404, "resp_nope")
    check_error(http.get("/v1/responses/resp_nope", params={"stream": "true", "starting_after": -2}), 400,
                "starting_after")
    check_error(http.get("/v1/responses/resp_nope/input_items", params={"limit": 0}), 400, "limit")
    check_error(http.delete("/v1/responses/resp_nope"), 404, "resp_nope")
    check_error(http.post("/v1/responses/resp_nope/cancel"), 404, "resp_nope")


def test_without_an_upstream_responses_name_the_setting(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL="").start()
    try:
        with raw(server) as http:
            check_error(http.post("/v1/responses", json={"model": "m", "input": "hi"}), 400,
                        "CELLBOX_UPSTREAM_BASE_URL")
    finally:
        server.stop()


def test_an_unreachable_or_silent_upstream_and_a_code_timeout(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    closed = f"http://127.0.0.1:{_free_port()}/v1"
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL=closed).start()
    try:
        with client(server) as sdk:
            with pytest.raises(openai.APIStatusError) as failed:
                sdk.responses.create(model="m", input="hi")
            assert failed.value.status_code == 502
            assert "127.0.0.1" in failed.value.message
    finally:
        server.stop()
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL=upstream.url, CELLBOX_TIMEOUT="1",
                    CELLBOX_UPSTREAM_TIMEOUT="1", CELLBOX_MODEL_ALIASES="gpt-4.1=aliased-model").start()
    try:
        upstream.script("aliased-model", {"text": "Renamed."})
        with client(server) as sdk:
            renamed = sdk.responses.create(model="gpt-4.1", input="hi")
        assert renamed.model == "gpt-4.1"  # what the client asked for
        assert [r["model"] for r in upstream.requests("aliased-model")] == ["aliased-model"]
        upstream.script("silent-model", {"text": "too late", "delay": 3})
        with client(server) as sdk:
            with pytest.raises(openai.APIStatusError) as failed:
                sdk.responses.create(model="silent-model", input="hi")
            assert failed.value.status_code == 502
            assert "did not answer in time" in failed.value.message
        upstream.script("timeout-model", {"code": "import time\nstate = 'kept'\ntime.sleep(30)"},
                        {"code": "print(state)"}, {"text": "It was too slow."})
        with client(server) as sdk:
            response = sdk.responses.create(model="timeout-model", tools=AUTO, input="go", include=OUTPUTS)
        slow, after, _ = response.output
        assert slow.status == "incomplete"
        assert after.outputs[0].logs == "kept\n"  # interrupted, not restarted
        told = upstream.requests("timeout-model")[1]["messages"][-1]["content"]
        assert "Execution timed out after" in told
        assert "was interrupted; the session is intact" in told
    finally:
        server.stop()


def test_review_findings_stay_fixed(sdk: openai.OpenAI, http: httpx.Client, upstream: ScriptedUpstream,
                                    model: str) -> None:
    # Ollama numbers every call of a parallel batch 0: two calls stay two calls.
    upstream.script(model, {"calls": [{"code": "a = 1"}, {"code": "print(a + 1)"}], "same_index": True},
                    {"text": "Two runs."})
    both = sdk.responses.create(model=model, tools=AUTO, input="go", include=OUTPUTS, stream=False)
    assert [(i.type, i.status) for i in both.output[:2]] == [("code_interpreter_call", "completed")] * 2
    assert both.output[1].outputs[0].logs == "2\n"
    # A turn cut short with no text at all is still incomplete.
    upstream.script(model, {"text": "", "finish_reason": "length"})
    cut = sdk.responses.create(model=model, input="go")
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    # tool_choice "none" means no code runs, even when the model calls anyway.
    upstream.script(model, {"code": "print('ran')"}, {"text": "Without the tool."})
    off = sdk.responses.create(model=model, tools=AUTO, tool_choice="none", input="go", include=OUTPUTS)
    assert off.output[0].status == "failed"
    assert "tool_choice" in off.output[0].outputs[0].logs
    assert off.output_text == "Without the tool."
    # Replayed assistant text lists back in the spec's shape.
    upstream.script(model, {"text": "ok"})
    replay = sdk.responses.create(model=model, input=[{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "hello"},
                                                      {"role": "user", "content": "again"}])
    assert [i.role for i in sdk.responses.input_items.list(replay.id).data] == ["user", "assistant", "user"]


def test_a_streamed_failure_before_any_output_leaves_no_container(sdk: openai.OpenAI, http: httpx.Client,
                                                                  upstream: ScriptedUpstream, model: str) -> None:
    data = sdk.files.create(file=("data.csv", b"a\n1\n"), purpose="user_data")
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [data.id]}}]
    before = {c.id for c in sdk.containers.list(limit=100)}
    upstream.script(model, {"status": 404, "error": "no such model"})
    events = sse(http, {"model": model, "tools": tools, "input": "go"})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "invalid_prompt"
    assert {c.id for c in sdk.containers.list(limit=100)} == before


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"reasoning": {"effort": "extreme"}}, "reasoning"),
    ({"text": {"format": {"type": "bogus"}}}, "text"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "name"),
    ({"service_tier": "bogus"}, "service_tier"),
    ({"input": [{"id": "msg_same", "role": "user", "content": "a"}, {"id": "msg_same", "role": "user",
                                                                      "content": "b"}]}, "distinct"),
    ({"input": [{"type": "code_interpreter_call", "id": "ci_1", "code": "1", "container_id": "cntr_1",
                 "outputs": None, "status": "weird"}]}, "status"),
    ({"input": [{"id": "m" * 65, "role": "user", "content": "a"}]}, "64"),
])
def test_fields_that_are_echoed_are_checked(http: httpx.Client, extra: dict[str, Any], fragment: str) -> None:
    check_error(http.post("/v1/responses", json={"model": "m", "input": "x", **extra}), 400, fragment)


def test_malformed_model_aliases_are_a_one_line_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "serve", "--port", "1", "--data-dir", str(tmp_path)],
                          env={**os.environ, "CELLBOX_MODEL_ALIASES": "gpt-4.1"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "cellbox: error: invalid CELLBOX_MODEL_ALIASES 'gpt-4.1': use 'requested=upstream,...'"]
