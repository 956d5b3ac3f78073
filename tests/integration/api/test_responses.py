"""POST /v1/responses with the code_interpreter tool, driven by the official SDK against a real server whose model
is the scripted upstream: the seed document's quick starts, streaming, conversations and stored responses."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from cellbox.services.conversation import tool_call_id
from tests import openapi
from tests.integration.api.server import Server, async_client
from tests.upstream import ScriptedUpstream

AUTO = [{"type": "code_interpreter", "container": {"type": "auto"}}]
OUTPUTS = ["code_interpreter_call.outputs"]


def sse(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed response as raw events, each checked against the spec and against its `event:` line."""
    events = []
    with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["type"] == name
                openapi.validate_event(event)
                events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def test_the_math_tutor_quick_start_runs_unchanged(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                   model: str) -> None:
    upstream.script(model, {"text": "Let me solve it.", "code": "x = (14 - 11) / 3\nprint(x)"},
                    {"text": "The solution is x = 1.", "usage": {"prompt_tokens": 50, "completion_tokens": 7,
                                                                  "cached_tokens": 20, "reasoning_tokens": 3}})
    instructions = """
You are a personal math tutor. When asked a math question,
write and run code using the python tool to answer the question.
"""
    resp = sdk.responses.create(
        model=model,
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        instructions=instructions,
        input="I need to solve the equation 3x + 11 = 14. Can you help me?",
    )
    assert [item.type for item in resp.output] == ["message", "code_interpreter_call", "message"]
    call = resp.output[1]
    assert call.code == "x = (14 - 11) / 3\nprint(x)"
    assert call.status == "completed"
    assert call.outputs is None  # not included
    assert sdk.containers.retrieve(call.container_id).status == "running"
    assert resp.output_text == "Let me solve it.The solution is x = 1."
    assert resp.status == "completed"
    assert resp.model == model
    assert resp.instructions == instructions
    assert resp.usage is not None
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (60, 12, 72)
    assert resp.usage.input_tokens_details.cached_tokens == 20
    assert resp.usage.output_tokens_details.reasoning_tokens == 3

    first, second = upstream.requests(model)
    question = "I need to solve the equation 3x + 11 = 14. Can you help me?"
    assert first["messages"] == [{"role": "system", "content": instructions}, {"role": "user", "content": question}]
    [tool] = first["tools"]
    assert tool["function"]["name"] == "python"
    assert "/mnt/data" in tool["function"]["description"]
    assert first["tool_choice"] == "auto"
    assert first["stream"] is False
    assert second["messages"][2]["role"] == "assistant"
    assert second["messages"][2]["content"] == "Let me solve it."
    assert second["messages"][2]["tool_calls"][0]["function"]["name"] == "python"
    assert second["messages"][3] == {"role": "tool", "tool_call_id": tool_call_id(call.id),
                                  "content": "1.0\n"}
    assert len(tool_call_id(call.id)) <= 40  # OpenAI's limit for tool-call ids
    assert upstream.remaining(model) == 0


def test_an_explicit_container_with_tool_choice_required(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                         model: str) -> None:
    upstream.script(model, {"code": "a = 4 * 3.82\nb = a ** 0.5\nc = b ** 0.5\nprint(a, b, c)"},
                    {"text": "4 * 3.82 = 15.28; its square root is 3.909; the square root of that is 1.977."})
    container = sdk.containers.create(name="test-container")
    response = sdk.responses.create(
        model=model,
        tools=[{"type": "code_interpreter", "container": container.id}],
        tool_choice="required",
        input="use the python tool to calculate what is 4 * 3.82. and then find its square root and then find the "
              "square root of that result",
        include=OUTPUTS,
    )
    assert response.output_text.startswith("4 * 3.82 = 15.28")
    call = response.output[0]
    assert call.type == "code_interpreter_call"
    assert call.container_id == container.id
    assert call.outputs is not None
    assert call.outputs[0].type == "logs"
    assert call.outputs[0].logs.startswith("15.28 3.90")
    assert response.tools[0].container == container.id
    assert response.tool_choice == "required"
    first, second = upstream.requests(model)
    assert first["tool_choice"] == "required"
    assert second["tool_choice"] == "auto"  # required only forces the first turn, or the loop would never end


def test_a_plot_is_cited_and_downloads_through_its_citation(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                            model: str) -> None:
    code = ("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16])\nplt.title('squares')\n"
            "plt.savefig('/mnt/data/squares.png')")
    upstream.script(model, {"code": code}, {"text": "Here is the chart: [squares](sandbox:/mnt/data/squares.png)"})
    with sdk.responses.stream(model=model, tools=AUTO, input="Plot the first four squares.",
                              include=OUTPUTS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    message = final.output[-1]
    assert message.type == "message"
    text = message.content[0]
    shown, saved = text.annotations  # the displayed figure (not mentioned: 0..0), then the saved file
    assert saved.type == "container_file_citation"
    assert saved.filename == "squares.png"
    assert text.text[saved.start_index:saved.end_index] == "[squares](sandbox:/mnt/data/squares.png)"
    assert (shown.start_index, shown.end_index, shown.filename) == (0, 0, f"{shown.file_id}.png")
    call = final.output[0]
    for citation in (shown, saved):
        assert citation.container_id == call.container_id
        png = sdk.containers.files.content.retrieve(citation.file_id, container_id=citation.container_id).read()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert any(o.type == "image" and o.url.startswith("data:image/png;base64,") for o in call.outputs or [])
    figure = sdk.containers.files.retrieve(shown.file_id, container_id=call.container_id)
    assert figure.path == f"/mnt/data/{shown.file_id}.png"
    assert figure.source == "assistant"


def test_a_generated_file_the_text_does_not_mention_is_cited_at_zero(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                     model: str) -> None:
    upstream.script(model, {"code": "open('/mnt/data/report.csv', 'w').write('a,b\\n1,2\\n')"},
                    {"text": "Done."})
    response = sdk.responses.create(model=model, tools=AUTO, input="Write a CSV.")
    [citation] = response.output[-1].content[0].annotations
    assert (citation.start_index, citation.end_index, citation.filename) == (0, 0, "report.csv")


def test_the_stream_follows_the_canonical_event_order(http: httpx.Client, upstream: ScriptedUpstream,
                                                      model: str) -> None:
    upstream.script(model, {"code": "print('hi')"}, {"text": "It printed hi."})
    events = sse(http, {"model": model, "tools": AUTO, "input": "say hi", "include": OUTPUTS})
    kinds = [e["type"] for e in events]
    deltas = kinds.count("response.code_interpreter_call_code.delta")
    text_deltas = kinds.count("response.output_text.delta")
    code_pieces = [e["delta"] for e in events if e["type"] == "response.code_interpreter_call_code.delta"]
    text_pieces = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    # The scripted upstream sends arguments 7 characters at a time and text 3 at a time (tests/upstream.py):
    # '{"code"', ': "prin', "t('hi')", '"}' carry "prin" and "t('hi')".
    assert code_pieces == ["prin", "t('hi')"]
    assert text_pieces == ["It ", "pri", "nte", "d h", "i."]
    assert kinds == (
        ["response.created", "response.in_progress", "response.output_item.added",
         "response.code_interpreter_call.in_progress"]
        + ["response.code_interpreter_call_code.delta"] * deltas
        + ["response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
           "response.code_interpreter_call.completed", "response.output_item.done",
           "response.output_item.added", "response.content_part.added"]
        + ["response.output_text.delta"] * text_deltas
        + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
           "response.completed"])
    code = "".join(e["delta"] for e in events if e["type"] == "response.code_interpreter_call_code.delta")
    assert code == "print('hi')"
    created, done = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress"
    assert created["output"] == []
    assert "usage" not in created
    assert done["id"] == created["id"]
    assert done["status"] == "completed"
    assert done["usage"]["total_tokens"] > 0
    added = events[2]["item"]
    assert added["code"] == ""
    assert added["status"] == "in_progress"
    assert added["outputs"] is None
    finished = events[kinds.index("response.output_item.done")]["item"]
    assert finished["outputs"] == [{"type": "logs", "logs": "hi\n"}]
    assert upstream.requests(model)[0]["stream"] is True


async def test_the_async_client_and_a_continued_conversation(server: Server, upstream: ScriptedUpstream,
                                                             model: str) -> None:
    upstream.script(model, {"code": "total = 6 * 7"}, {"text": "Stored."},
                    {"code": "print(total)"}, {"text": "It is 42."})
    async with async_client(server) as sdk:
        first = await sdk.responses.create(model=model, tools=AUTO, input="Compute 6*7 and keep it.")
        second = await sdk.responses.create(model=model, tools=AUTO, input="Print it.",
                                            previous_response_id=first.id, include=OUTPUTS)
    assert second.previous_response_id == first.id
    assert second.output[0].container_id == first.output[0].container_id  # the auto container lives on
    assert second.output[0].outputs[0].logs == "42\n"  # and so does the Python session
    assert second.output_text == "It is 42."
    messages = upstream.requests(model)[2]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[0]["content"] == "Compute 6*7 and keep it."
    assert messages[3]["content"] == "Stored."


def test_a_stored_response_can_be_read_listed_and_deleted(sdk: openai.OpenAI, http: httpx.Client,
                                                          upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": "print(1)"}, {"text": "One."})
    created = sdk.responses.create(
        model=model, tools=AUTO, metadata={"ticket": "42"},
        input=[{"role": "developer", "content": "Be brief."},
               {"role": "user", "content": [{"type": "input_text", "text": "Print one."}]}])
    assert created.metadata == {"ticket": "42"}
    again = sdk.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    assert again.output[0].outputs is None
    assert sdk.responses.retrieve(created.id, include=OUTPUTS).output[0].outputs[0].logs == "1\n"
    listed = sdk.responses.input_items.list(created.id)
    assert [(i.role, i.type) for i in listed.data] == [("user", "message"), ("developer", "message")]  # desc
    asc = sdk.responses.input_items.list(created.id, order="asc", limit=1)
    assert asc.has_more
    assert asc.data[0].role == "developer"
    assert [i.id for i in sdk.responses.input_items.list(created.id, order="asc", after=asc.data[0].id).data] \
        == [listed.data[0].id]
    assert upstream.requests(model)[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sdk.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)
    check = http.get(f"/v1/responses/{created.id}/input_items")
    assert check.status_code == 404


def test_store_false_keeps_nothing(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"text": "Hello."})
    response = sdk.responses.create(model=model, input="hi", store=False)
    assert response.output_text == "Hello."
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_another_project_cannot_see_a_response(sdk: openai.OpenAI, other: openai.OpenAI,
                                               upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"text": "Mine."})
    mine = sdk.responses.create(model=model, input="hi")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=model, input="continue", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)


def test_the_readme_quick_start_runs_as_written(server: Server, upstream: ScriptedUpstream) -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    snippet = re.search(r"```python\n(from openai import OpenAI\n[^`]*?responses\.create[^`]*)```", readme)
    assert snippet is not None
    upstream.script("qwen3:8b", {"code": "print((14 - 11) / 3)"}, {"text": "x = 1"})
    printed: list[str] = []
    code = snippet.group(1).replace("http://127.0.0.1:8000", server.url).replace('api_key="local"', 'api_key="key-a"')
    exec(code, {"print": lambda *a: printed.append(" ".join(map(str, a)))})
    assert printed == ["x = 1"]
    assert upstream.requests("qwen3:8b")[1]["messages"][-1]["content"] == "1.0\n"


def test_input_files_and_images_reach_the_container_and_the_model(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                  model: str) -> None:
    table = sdk.files.create(file=("sales.csv", b"month,total\njan,10\nfeb,32\n"), purpose="user_data")
    notes = sdk.files.create(file=("notes.txt", b"remember feb"), purpose="user_data")
    image = sdk.files.create(file=("dot.png", b"\x89PNG\r\n\x1a\nfake"), purpose="vision")
    upstream.script(model, {"code": "import pandas as pd\nprint(pd.read_csv('sales.csv').total.sum(), "
                                    "open('/mnt/data/notes.txt').read(), open('inline.txt').read())"},
                    {"text": "42 in total."})
    tools = [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [table.id],
                                                        "memory_limit": "4g"}}]
    response = sdk.responses.create(model=model, tools=tools, include=OUTPUTS, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Sum the totals."},
        {"type": "input_file", "file_id": notes.id},
        {"type": "input_file", "filename": "inline.txt", "file_data": "aW5saW5lIGRhdGE="},
        {"type": "input_image", "file_id": image.id},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
    ]}])
    call = response.output[0]
    assert call.outputs[0].logs == "42 remember feb inline data\n"
    files = {f.path: f.source for f in sdk.containers.files.list(call.container_id)}
    digest = hashlib.sha256(b"data:image/png;base64,AAAA").hexdigest()[:12]
    assert files == {"/mnt/data/sales.csv": "user", "/mnt/data/notes.txt": "user", "/mnt/data/inline.txt": "user",
                     "/mnt/data/dot.png": "user", f"/mnt/data/image-{digest}.png": "user"}  # images too, for code
    dot = next(f for f in sdk.containers.files.list(call.container_id) if f.path == "/mnt/data/dot.png")
    assert sdk.containers.files.content.retrieve(dot.id, container_id=call.container_id).read() == \
        b"\x89PNG\r\n\x1a\nfake"
    assert response.tools[0].container.memory_limit == "4g"
    system, user = upstream.requests(model)[0]["messages"]
    assert system == {"role": "system", "content": "Files available in /mnt/data: /mnt/data/sales.csv"}
    texts = [p["text"] for p in user["content"] if p["type"] == "text"]
    assert texts[0] == "Sum the totals."
    assert "/mnt/data/notes.txt" in texts[1]
    assert "/mnt/data/inline.txt" in texts[2]
    urls = [p["image_url"] for p in user["content"] if p["type"] == "image_url"]
    assert urls[0]["url"].startswith("data:image/png;base64,")  # the file, sent as data
    assert urls[1] == {"url": "data:image/png;base64,AAAA", "detail": "low"}
    assert texts[3:] == ["[This image is also at /mnt/data/dot.png]",
                         f"[This image is also at /mnt/data/image-{digest}.png]"]
    items = sdk.responses.input_items.list(response.id).data
    assert items[0].content[1].type == "input_file"

    # Continuing the conversation with the same tool config copies nothing twice.
    upstream.script(model, {"code": "import os\nprint(sorted(os.listdir('.')))"}, {"text": "Same files."})
    again = sdk.responses.create(model=model, tools=tools, include=OUTPUTS, input="List the files.",
                                 previous_response_id=response.id)
    assert again.output[0].container_id == call.container_id
    assert again.output[0].outputs[0].logs == \
        f"['dot.png', 'image-{digest}.png', 'inline.txt', 'notes.txt', 'sales.csv']\n"


def test_a_forced_tool_choice_and_the_model_options_are_passed_on(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                  model: str) -> None:
    upstream.script(model, {"code": "1"}, {"text": '{"answer": 1', "finish_reason": "length"})
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    response = sdk.responses.create(
        model=model, tools=AUTO, tool_choice={"type": "code_interpreter"}, input="go", temperature=0.2, top_p=0.9,
        max_output_tokens=64, text={"format": {"type": "json_schema", "name": "answer", "schema": schema}})
    first, second = upstream.requests(model)
    assert first["tool_choice"] == "required"  # the one tool offered: the string form every server reads
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.2, 0.9, 64)
    assert first["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert second["tool_choice"] == "auto"
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"
    assert response.temperature == 0.2
    assert response.tool_choice.type == "code_interpreter"


def test_tool_choice_none_and_no_tools_only_talk(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"text": "Just talking."}, {"text": "Still talking."})
    response = sdk.responses.create(model=model, tools=AUTO, tool_choice="none", input="hi")
    assert response.output_text == "Just talking."
    plain = sdk.responses.create(model=model, input=[{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "hello"},
                                                     {"role": "user", "content": "again"}])
    assert plain.output_text == "Still talking."
    first, second = upstream.requests(model)
    assert first["tool_choice"] == "none"
    assert "tools" not in second
    assert second["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                  {"role": "user", "content": "again"}]


def test_replayed_items_continue_a_conversation_without_storage(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                                model: str) -> None:
    upstream.script(model, {"code": "n = 5"}, {"text": "Set."}, {"code": "print(n * 2)"}, {"text": "10."})
    first = sdk.responses.create(model=model, tools=AUTO, input="Set n to 5.", store=False)
    history = [{"role": "user", "content": "Set n to 5."}] + [item.model_dump() for item in first.output]
    second = sdk.responses.create(model=model, tools=AUTO, include=OUTPUTS, store=False,
                                  input=[*history, {"role": "user", "content": "Double it."}])
    assert second.output[0].container_id == first.output[0].container_id
    assert second.output[0].outputs[0].logs == "10\n"
    messages = upstream.requests(model)[2]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[2]["content"] == "[output not available]\n"  # outputs were not included the first time


def test_a_foreign_container_is_never_used(sdk: openai.OpenAI, other: openai.OpenAI, http: httpx.Client,
                                           upstream: ScriptedUpstream, model: str) -> None:
    theirs = other.containers.create(name="theirs")
    other_run = other.post(f"/containers/{theirs.id}/execute", body={"code": "secret = 1"}, cast_to=object)
    assert other_run["status"] == "completed"
    body = {"model": model, "input": "go", "tools": [{"type": "code_interpreter", "container": theirs.id}]}
    check = http.post("/v1/responses", json=body)
    assert check.status_code == 404
    # A replayed call naming their container does not make auto mode reuse it.
    upstream.script(model, {"code": "print('secret' in globals())"}, {"text": "No."})
    replayed = {"type": "code_interpreter_call", "id": "ci_x", "code": "secret = 1", "container_id": theirs.id,
                "outputs": None, "status": "completed"}
    response = sdk.responses.create(model=model, tools=AUTO, include=OUTPUTS,
                                    input=[{"role": "user", "content": "hi"}, replayed,
                                           {"role": "user", "content": "is it there?"}])
    assert response.output[0].container_id != theirs.id
    assert response.output[0].outputs[0].logs == "False\n"


def test_a_client_that_goes_away_stops_the_run(sdk: openai.OpenAI, http: httpx.Client, upstream: ScriptedUpstream,
                                               model: str) -> None:
    upstream.script(model, {"code": "import time\ntime.sleep(300)"})
    body = {"model": model, "tools": AUTO, "input": "sleep", "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and '"response.created"' in line:
                rid = json.loads(line[6:])["response"]["id"]
            if line.startswith("data: ") and '"response.code_interpreter_call.interpreting"' in line:
                break  # hang up while the code runs
    for _ in range(200):
        stored = sdk.responses.retrieve(rid)
        if stored.status != "in_progress":
            break
        time.sleep(0.05)
    assert stored.status == "incomplete"
    assert stored.output[0].status == "incomplete"
    # The sleeping code was interrupted: the container answers at once.
    run = sdk.post(f"/containers/{stored.output[0].container_id}/execute", body={"code": "2 + 2", "timeout": 30},
                   cast_to=object)
    assert run["outputs"] == [{"type": "logs", "logs": "4\n"}]


def test_streamed_citations_and_an_incomplete_answer_match_the_spec(http: httpx.Client, upstream: ScriptedUpstream,
                                                                   model: str) -> None:
    upstream.script(model, {"code": "open('/mnt/data/out.txt', 'w').write('x')"},
                    {"text": "Saved /mnt/data/out.txt and then I ran out of", "finish_reason": "length"})
    events = sse(http, {"model": model, "tools": AUTO, "input": "save", "max_output_tokens": 16})
    [added] = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added["annotation"]["filename"] == "out.txt"
    assert (added["annotation"]["start_index"], added["annotation"]["end_index"]) == (6, 23)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    part = next(e for e in events if e["type"] == "response.content_part.done")["part"]
    assert part["annotations"] == [added["annotation"]]


def test_model_written_code_cannot_see_the_upstream_key_or_reach_the_model_server(
        sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    code = ("import os, socket\n"
            "environ = open('/proc/self/environ', 'rb').read() + open('/proc/2/environ', 'rb').read()\n"
            "print('key visible:', b'upstream-secret' in environ or any('upstream-secret' in v "
            "for v in os.environ.values()))\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {upstream.port}), timeout=2)\n"
            "    print('model server reachable')\n"
            "except OSError as exc:\n"
            "    print('model server unreachable:', type(exc).__name__)\n")
    upstream.script(model, {"code": code}, {"text": "Checked."})
    response = sdk.responses.create(model=model, tools=AUTO, input="probe", include=OUTPUTS)
    logs = response.output[0].outputs[0].logs
    assert "key visible: False" in logs
    assert "model server unreachable" in logs
    assert upstream.headers(model)[0]["authorization"] == "Bearer upstream-secret"  # only the model server gets it


def test_an_inline_file_name_cannot_escape_the_workspace(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                         model: str) -> None:
    upstream.script(model, {"code": "import os\nprint(sorted(os.listdir('/mnt/data')), os.path.exists('/etc/evil'))"},
                    {"text": "Listed."})
    response = sdk.responses.create(model=model, tools=AUTO, include=OUTPUTS, input=[{"role": "user", "content": [
        {"type": "input_file", "filename": "../../../etc/evil", "file_data": "ZXZpbA=="}]}])
    assert response.output[0].outputs[0].logs == "['evil'] False\n"
    told = upstream.requests(model)[0]["messages"][0]["content"]
    assert told == "[The user attached the file evil; it is at /mnt/data/evil]"  # where it really is
    assert sdk.responses.input_items.list(response.id).data[0].content[0].filename == "evil"


PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])"


def test_a_vision_model_sees_the_figures_its_code_displayed(sdk: openai.OpenAI, upstream: ScriptedUpstream,
                                                            model: str) -> None:
    """With an image in the input the model evidently reads images: the figures follow the run's tool message on
    a user message (tool messages carry text only); replayed with previous_response_id too."""
    upstream.script(model, {"code": PLOT}, {"text": "A rising curve."}, {"text": "Still rising."})
    picture = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    first = sdk.responses.create(model=model, tools=AUTO, include=OUTPUTS, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Plot it like this one."}, {"type": "input_image", "image_url": picture}]}])
    figure = next(o.url for o in first.output[0].outputs if o.type == "image")
    assert figure.startswith("data:image/png;base64,")
    sdk.responses.create(model=model, tools=AUTO, input="And now?", previous_response_id=first.id)
    for request in upstream.requests(model)[1:]:
        messages = request["messages"]
        at = next(n for n, m in enumerate(messages) if m["role"] == "tool")
        shown = messages[at + 1]
        assert shown["role"] == "user"
        assert shown["content"][0] == {"type": "text", "text": "[The image(s) your code displayed:]"}
        assert shown["content"][1] == {"type": "image_url", "image_url": {"url": figure}}


def test_a_text_model_gets_no_images_back(sdk: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> None:
    upstream.script(model, {"code": PLOT}, {"text": "Plotted."})
    sdk.responses.create(model=model, tools=AUTO, input="Plot squares.")
    messages = upstream.requests(model)[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert "[image displayed]" in messages[2]["content"]
