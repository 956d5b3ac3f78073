"""Background responses: they answer at once, go on without their client, can be polled, cancelled (the running
code is interrupted) and streamed again from any sequence number; a restart never leaves one running forever;
a project runs a bounded number at once."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests import openapi
from tests.integration.api.server import Server, check_error, client, started_auto_workspace
from tests.integration.api.test_responses import AUTO, OUTPUTS
from tests.upstream import ScriptedUpstream
from tests.waiting import until

HOLD = ("open('/mnt/data/started', 'w').close()\nimport os, time\n"
        "while not os.path.exists('/mnt/data/go'):\n    time.sleep(0.01)\nprint('went')")


def read_events(response: httpx.Response, stop_at: str | None = None) -> list[dict[str, Any]]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            openapi.validate_event(event)
            events.append(event)
            if event["type"] == stop_at:
                break
    return events


def test_a_background_response_is_polled_to_its_end(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                    model: str) -> None:
    upstream.script(model, {"code": "print(6 * 7)"}, {"text": "42."})
    queued = sdk.responses.create(model=model, input="6*7?", tools=AUTO, background=True)
    assert queued.status == "queued"
    assert queued.background is True
    done = until(lambda: (r := sdk.responses.retrieve(queued.id, include=OUTPUTS)).status == "completed" and r,
                 "the response to complete")
    assert done.output_text == "42."
    assert done.output[0].outputs[0].logs == "42\n"


def test_a_running_response_shows_its_code_outputs_when_the_retrieve_asks(server: Server, sdk: openai.OpenAI,
                                                                           upstream: ScriptedUpstream,
                                                                           model: str) -> None:
    """The ``include`` that counts is the retrieve's own, also while the run goes on (it was the create's)."""
    upstream.script(model, {"code": "print('first')"}, {"code": HOLD}, {"text": "done"})
    queued = sdk.responses.create(model=model, input="two runs", tools=AUTO, background=True)
    workspace = started_auto_workspace(server, queued.id)  # the first call ran; the second holds
    running = sdk.responses.retrieve(queued.id, include=OUTPUTS)
    assert running.status == "in_progress"
    assert running.output[0].outputs[0].logs == "first\n"
    assert sdk.responses.retrieve(queued.id).output[0].outputs is None  # not asked for
    (workspace / "go").write_text("go")
    done = until(lambda: (r := sdk.responses.retrieve(queued.id, include=OUTPUTS)).status == "completed" and r,
                 "the response to complete")
    assert [call.outputs[0].logs for call in done.output[:2]] == ["first\n", "went\n"]


def test_cancelling_interrupts_the_running_code(server: Server, sdk: openai.OpenAI, http: httpx.Client,
                                                upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": HOLD}, {"text": "never"})
    queued = sdk.responses.create(model=model, input="hold", tools=AUTO, background=True)
    started_auto_workspace(server, queued.id)
    running = sdk.responses.retrieve(queued.id)
    assert running.status == "in_progress"
    assert running.output[0].status == "interpreting"
    cancelled = sdk.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output[0].status == "incomplete"
    assert sdk.responses.retrieve(queued.id).status == "cancelled"
    assert sdk.responses.cancel(queued.id).status == "cancelled"  # again: nothing more to stop
    container = cancelled.output[0].container_id
    # The interrupted code released its container: the next execution runs (it would wait behind the hold).
    after = http.post(f"/v1/containers/{container}/execute", json={"code": "1 + 1"}, timeout=120)
    assert after.json()["outputs"] == [{"type": "logs", "logs": "2\n"}]
    assert upstream.remaining(model) == 1  # the model was never asked again


def test_a_stream_resumes_after_any_sequence_number(server: Server, http: httpx.Client,
                                                    upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": HOLD}, {"text": "It went."})
    body = {"model": model, "input": "hold", "tools": AUTO, "background": True, "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as first:
        assert first.status_code == 200
        before = read_events(first, stop_at="response.code_interpreter_call.interpreting")
    rid = before[0]["response"]["id"]
    assert before[0]["response"]["status"] == "queued"
    (started_auto_workspace(server, rid) / "go").write_text("go")  # the run went on without its client
    last = before[-1]["sequence_number"]
    with http.stream("GET", f"/v1/responses/{rid}", params={"stream": "true", "starting_after": last}) as again:
        after = read_events(again)
    numbers = [e["sequence_number"] for e in before + after]
    assert numbers == list(range(len(numbers)))  # nothing lost, nothing repeated
    assert after[-1]["type"] == "response.completed"
    assert after[-1]["response"]["output"][-1]["content"][0]["text"] == "It went."
    with http.stream("GET", f"/v1/responses/{rid}", params={"stream": "true", "starting_after": 2}) as late:
        replayed = read_events(late)  # after the end too, while the server keeps its events
    assert [e["sequence_number"] for e in replayed] == numbers[3:]


def test_only_background_responses_stream_again(sdk: openai.OpenAI, http: httpx.Client, upstream: ScriptedUpstream,
                                                model: str) -> None:
    upstream.script(model, {"text": "hi"})
    plain = sdk.responses.create(model=model, input="hi")
    check_error(http.get(f"/v1/responses/{plain.id}", params={"stream": "true"}), 400, "background")
    check_error(http.get("/v1/responses/resp_nope", params={"stream": "true"}), 404, "resp_nope")


def test_restarts_and_the_per_project_limit(tmp_path: Path, upstream: ScriptedUpstream, model: str) -> None:
    """Beyond the limit a 429; a server killed mid-run marks the run failed when it starts again, and one that
    stops cleanly says it stopped."""
    server = Server(tmp_path, CELLBOX_BACKGROUND_LIMIT="1", CELLBOX_UPSTREAM_BASE_URL=upstream.url).start()
    try:
        with client(server) as sdk:
            upstream.script(model, {"code": HOLD})
            held = sdk.responses.create(model=model, input="hold", tools=AUTO, background=True)
            started_auto_workspace(server, held.id)
            with pytest.raises(openai.RateLimitError, match="already runs 1 background"):
                sdk.responses.create(model=model, input="second", background=True)
            with client(server, "key-b") as other:  # another project has its own allowance
                upstream.script(model, {"text": "theirs"})
                theirs = other.responses.create(model=model, input="x", background=True)
                until(lambda: other.responses.retrieve(theirs.id).status == "completed", "the other project's run")
        server.stop(signal.SIGKILL)
        server.start()
        with client(server) as sdk:
            failed = sdk.responses.retrieve(held.id)
            assert failed.status == "failed"
            assert "restarted while this response ran" in failed.error.message
            upstream.script(model, {"code": HOLD})
            again = sdk.responses.create(model=model, input="hold", tools=AUTO, background=True)  # allowed again
            started_auto_workspace(server, again.id)
        server.stop(signal.SIGTERM)
        server.start()
        with client(server) as sdk:
            stopped = sdk.responses.retrieve(again.id)
            assert stopped.status == "failed"
            assert "server stopped while this response ran" in stopped.error.message
    finally:
        server.stop()


def test_raw_background_bodies_validate(http: httpx.Client, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"text": "ok"})
    reply = http.post("/v1/responses", json={"model": model, "input": "x", "background": True})
    assert reply.status_code == 200
    openapi.validate("/v1/responses", "post", 200, reply.json())
    final = until(lambda: (r := http.get(f"/v1/responses/{reply.json()['id']}").json())["status"]
                  not in ("queued", "in_progress") and r, "the response to end")
    openapi.validate(f"/v1/responses/{final['id']}", "get", 200, final)
    assert final["status"] == "completed"


def test_the_sdk_resumes_a_background_stream(server: Server, sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                             model: str) -> None:
    """OpenAI's documented flow: create(background=True, stream=True), note the cursor, then
    responses.retrieve(id, stream=True, starting_after=cursor)."""
    upstream.script(model, {"code": HOLD}, {"text": "Resumed."})
    cursor, rid = -1, ""
    with sdk.responses.create(model=model, input="hold", tools=AUTO, background=True, stream=True) as stream:
        for event in stream:
            cursor = event.sequence_number
            if event.type == "response.created":
                rid = event.response.id
            if event.type == "response.code_interpreter_call.interpreting":
                break
    (started_auto_workspace(server, rid) / "go").write_text("go")
    resumed = list(sdk.responses.retrieve(rid, stream=True, starting_after=cursor))
    assert resumed[0].sequence_number == cursor + 1
    assert resumed[-1].type == "response.completed"
    assert resumed[-1].response.output_text == "Resumed."


def _call_outputs(events: list[Any]) -> tuple[Any, Any]:
    """The code call's outputs as the stream showed them: in its ``output_item.done``, and in ``completed``."""
    done = next(e for e in events if e.type == "response.output_item.done" and e.item.type == "code_interpreter_call")
    assert events[-1].type == "response.completed"
    return done.item.outputs, events[-1].response.output[0].outputs


def test_a_replayed_stream_shows_code_outputs_when_the_retrieve_asks(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                     model: str) -> None:
    """The ``include`` that counts in a replay is the retrieve's own (it was the create's)."""
    upstream.script(model, {"code": "print('shown')"}, {"text": "done"})
    queued = sdk.responses.create(model=model, input="run", tools=AUTO, background=True)  # no include
    until(lambda: sdk.responses.retrieve(queued.id).status == "completed", "the response to complete")
    in_item, in_completed = _call_outputs(list(sdk.responses.retrieve(queued.id, stream=True, include=OUTPUTS)))
    assert in_item[0].logs == in_completed[0].logs == "shown\n"
    assert _call_outputs(list(sdk.responses.retrieve(queued.id, stream=True))) == (None, None)


def test_a_replayed_stream_hides_code_outputs_the_create_asked_for(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                   model: str) -> None:
    """The create's own stream shows what the create asked for; a replay that does not ask sees no outputs."""
    upstream.script(model, {"code": "print('shown')"}, {"text": "done"})
    with sdk.responses.create(model=model, input="run", tools=AUTO, background=True, stream=True,
                              include=OUTPUTS) as stream:
        first = list(stream)
    in_item, in_completed = _call_outputs(first)
    assert in_item[0].logs == in_completed[0].logs == "shown\n"
    rid = first[0].response.id
    assert _call_outputs(list(sdk.responses.retrieve(rid, stream=True))) == (None, None)
    in_item, _ = _call_outputs(list(sdk.responses.retrieve(rid, stream=True, include=OUTPUTS)))
    assert in_item[0].logs == "shown\n"
