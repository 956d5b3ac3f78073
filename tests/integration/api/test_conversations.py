"""The Conversations API, and responses that read and extend a conversation: OpenAI's SDK flows unchanged, every
body checked against the spec, per project."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import openai
import pytest

from tests.integration.api.server import Server, check_error, client, started_auto_workspace
from tests.integration.api.test_responses import AUTO, OUTPUTS
from tests.upstream import ScriptedUpstream


def test_the_conversation_calls_from_openais_docs(sdk: openai.OpenAI) -> None:
    conversation = sdk.conversations.create(metadata={"topic": "demo"}, items=[
        {"type": "message", "role": "user", "content": "Hello!"}])
    assert conversation.id.startswith("conv_")
    assert sdk.conversations.retrieve(conversation.id).metadata == {"topic": "demo"}
    updated = sdk.conversations.update(conversation.id, metadata={"topic": "project-x"})
    assert updated.metadata == {"topic": "project-x"}
    added = sdk.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "More."}]},
        {"type": "message", "role": "assistant", "content": "Sure."}])
    assert [item.role for item in added.data] == ["user", "assistant"]
    listed = sdk.conversations.items.list(conversation.id, order="asc")
    assert [item.content[0].text for item in listed.data] == ["Hello!", "More.", "Sure."]
    assert sdk.conversations.items.list(conversation.id, limit=1).data[0].id == added.data[-1].id  # newest first
    first = listed.data[0]
    assert sdk.conversations.items.retrieve(first.id, conversation_id=conversation.id).id == first.id
    after = sdk.conversations.items.delete(first.id, conversation_id=conversation.id)
    assert after.id == conversation.id
    assert len(sdk.conversations.items.list(conversation.id).data) == 2
    deleted = sdk.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted) == (conversation.id, True)
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


def test_responses_in_a_conversation_share_its_items_and_its_container(sdk: openai.OpenAI,
                                                                       upstream: ScriptedUpstream,
                                                                       model: str) -> None:
    conversation = sdk.conversations.create()
    upstream.script(model, {"code": "x = 6 * 7"}, {"text": "Set."}, {"code": "print(x)"}, {"text": "42."})
    first = sdk.responses.create(model=model, conversation=conversation.id, input="Set x.", tools=AUTO)
    assert first.conversation.id == conversation.id
    second = sdk.responses.create(model=model, conversation={"id": conversation.id}, input="Print x.", tools=AUTO,
                                  include=OUTPUTS)
    assert second.output[0].outputs[0].logs == "42\n"  # the same session
    assert second.output[0].container_id == first.output[0].container_id
    sent = upstream.requests(model)[2]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[-1]["content"] == "Print x."
    items = sdk.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "code_interpreter_call", "message"] * 2
    assert items[1].outputs is None  # hidden unless asked for
    shown = sdk.conversations.items.list(conversation.id, order="asc", include=OUTPUTS).data
    assert shown[4].outputs[0].logs == "42\n"


def test_conversations_belong_to_their_project(sdk: openai.OpenAI, other: openai.OpenAI, http: httpx.Client,
                                               model: str) -> None:
    conversation = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "mine"}])
    with pytest.raises(openai.NotFoundError):
        other.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        other.conversations.items.list(conversation.id)
    with pytest.raises(openai.NotFoundError):
        other.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=model, conversation=conversation.id, input="read it")
    assert sdk.conversations.retrieve(conversation.id).id == conversation.id


@pytest.mark.parametrize(("body", "fragment"), [
    ({"items": [{"type": "message", "role": "user", "content": "x"}] * 21}, "items"),
    ({"metadata": {str(n): "v" for n in range(17)}}, "16"),
    ({"items": [{"type": "item_reference", "id": "msg_nope"}]}, "msg_nope"),
])
def test_bad_conversation_bodies_are_400s(http: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    check_error(http.post("/v1/conversations", json=body), 400, fragment)


def test_deleting_a_conversation_a_running_response_uses(server: Server, sdk: openai.OpenAI,
                                                         upstream: ScriptedUpstream, model: str) -> None:
    """The response finishes with its own answer; nothing is added to a conversation that is gone."""
    conversation = sdk.conversations.create()
    upstream.script(model, {"code": "open('/mnt/data/started', 'w').close()\nimport os, time\n"
                                    "while not os.path.exists('/mnt/data/go'):\n    time.sleep(0.01)"},
                    {"text": "Finished."})
    answer: dict[str, Any] = {}

    def respond() -> None:
        with client(server) as mine:
            answer["response"] = mine.responses.create(model=model, conversation=conversation.id, input="go",
                                                       tools=AUTO)

    thread = threading.Thread(target=respond)
    thread.start()
    workspace = started_auto_workspace(server)
    sdk.conversations.delete(conversation.id)
    (workspace / "go").write_text("go")
    thread.join(timeout=120)
    assert answer["response"].output_text == "Finished."
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.list(conversation.id)

