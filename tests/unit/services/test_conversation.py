"""Responses items → chat-completions messages, the ``python`` tool the model is offered, and what a run returns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cellbox.services.conversation import (
    MAX_TOOL_RESULT,
    call_messages,
    chat_messages,
    function_output_text,
    python_tool,
    tool_call_id,
    tool_result,
)

# --------------------------------------------------------------------------------------------------- python_tool


@pytest.mark.parametrize(("timeout", "shown"), [(30, "30 seconds"), (2.5, "2.5 seconds"), (120.0, "120 seconds")])
def test_python_tool_shape(timeout: float, shown: str) -> None:
    tool = python_tool(timeout)
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == "python"
    assert function["parameters"]["type"] == "object"
    assert function["parameters"]["required"] == ["code"]
    assert function["parameters"]["properties"]["code"]["type"] == "string"
    assert "/mnt/data" in function["description"]
    assert shown in function["description"]
    json.dumps(tool)  # it goes over the wire as is


# --------------------------------------------------------------------------------------------------- tool_result


def test_logs_are_joined_as_written() -> None:
    outputs = [{"type": "logs", "logs": "a\n"}, {"type": "logs", "logs": "b\n"}]
    assert tool_result(outputs) == "a\nb\n"


def test_images_are_marked_in_order() -> None:
    outputs = [{"type": "logs", "logs": "before\n"}, {"type": "image", "url": "data:image/png;base64,AA=="},
               {"type": "logs", "logs": "after\n"}]
    assert tool_result(outputs) == "before\n[image displayed]\nafter\n"


def test_note_and_files_follow_the_output() -> None:
    outputs = [{"type": "logs", "logs": "Traceback ...\n"}]
    text = tool_result(outputs, "timed out after 30 seconds", ["/mnt/data/a.csv", "/mnt/data/b.png"])
    assert text == "Traceback ...\n[timed out after 30 seconds]\n[files written: /mnt/data/a.csv, /mnt/data/b.png]\n"


def test_a_note_alone() -> None:
    assert tool_result(None, "output not available") == "[output not available]\n"


@pytest.mark.parametrize("outputs", [None, [], [{"type": "logs", "logs": ""}], [{"type": "logs", "logs": None}]])
def test_nothing_to_say_is_no_output(outputs: list[dict[str, Any]] | None) -> None:
    assert tool_result(outputs) == "[no output]"


def test_unknown_output_types_are_skipped() -> None:
    assert tool_result([{"type": "something_new", "logs": "x"}]) == "[no output]"


def test_output_at_the_limit_is_whole() -> None:
    text = "x" * MAX_TOOL_RESULT
    assert tool_result([{"type": "logs", "logs": text}]) == text


def test_long_output_keeps_head_and_tail_and_says_how_much_was_cut() -> None:
    half = MAX_TOOL_RESULT // 2
    head, middle, tail = "H" * half, "M" * 5000, "T" * half
    text = tool_result([{"type": "logs", "logs": head + middle + tail}], "note", ["/mnt/data/out.csv"])
    end = "[note]\n[files written: /mnt/data/out.csv]\n"
    cut = len(middle) + len(end)
    assert text.startswith(head + "\n[... ")
    assert f"[... {cut} characters cut ...]" in text
    assert text.endswith(("T" * (half - len(end))) + end)  # the note and the files survive the cut
    assert "M" not in text
    assert len(text) < MAX_TOOL_RESULT + 100


# ------------------------------------------------------------------------------------------------- call_messages


def _tool_call(messages: list[dict[str, Any]], n: int = 0) -> dict[str, Any]:
    return dict(messages[n]["tool_calls"][0])


def test_call_joins_the_assistant_text_before_it() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Let me."}]
    call_messages(messages, "ci_1", "print(1)", "1\n")
    assert messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Let me.", "tool_calls": [
            {"id": tool_call_id("ci_1"), "type": "function",
             "function": {"name": "python", "arguments": '{"code": "print(1)"}'}}]},
        {"role": "tool", "tool_call_id": tool_call_id("ci_1"), "content": "1\n"},
    ]


def test_call_after_a_user_message_gets_its_own_assistant_message() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    call_messages(messages, "ci_1", "x = 1", "[no output]")
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["content"] is None
    assert json.loads(_tool_call(messages, 1)["function"]["arguments"]) == {"code": "x = 1"}


def test_call_on_empty_messages() -> None:
    messages: list[dict[str, Any]] = []
    call_messages(messages, "ci_1", "x", "r")
    assert [m["role"] for m in messages] == ["assistant", "tool"]


def test_a_run_after_an_answered_call_is_a_new_assistant_message() -> None:
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": "Two runs."}]
    call_messages(messages, "ci_1", "a", "ra")
    call_messages(messages, "ci_2", "b", "rb")
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant", "tool"]
    ids = [m["tool_calls"][0]["id"] for m in messages if m["role"] == "assistant"]
    assert ids == [tool_call_id("ci_1"), tool_call_id("ci_2")]
    assert messages[3] == {"role": "tool", "tool_call_id": tool_call_id("ci_2"), "content": "rb"}


def test_calls_of_one_batch_share_the_assistant_message() -> None:
    """Calls not yet answered are a parallel batch: the next call joins them, and the answers follow."""
    messages: list[dict[str, Any]] = [{"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}]
    call_messages(messages, "ci_3", "c", "rc")
    assert [m["role"] for m in messages] == ["assistant", "tool"]
    assert [c["id"] for c in messages[0]["tool_calls"]] == ["x", tool_call_id("ci_3")]


def test_missing_code_is_sent_as_empty_code() -> None:
    messages: list[dict[str, Any]] = []
    call_messages(messages, "ci_1", None, "r")
    assert json.loads(_tool_call(messages)["function"]["arguments"]) == {"code": ""}


def test_code_with_quotes_and_newlines_round_trips() -> None:
    code = 'print("a\\nb")\nx = {"k": 1}\n'
    messages: list[dict[str, Any]] = []
    call_messages(messages, "ci_1", code, "r")
    assert json.loads(_tool_call(messages)["function"]["arguments"])["code"] == code


# ------------------------------------------------------------------------------------------------- chat_messages


def _msg(role: str, content: str | list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": role, "status": "completed", "content": content}


def test_instructions_become_the_system_message() -> None:
    assert chat_messages("Be brief.", [_msg("user", "hi")], {}, {}) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


@pytest.mark.parametrize("instructions", [None, ""])
def test_no_instructions_no_system_message(instructions: str | None) -> None:
    assert chat_messages(instructions, [_msg("user", "hi")], {}, {}) == [{"role": "user", "content": "hi"}]


def test_leading_developer_and_system_messages_become_one_system_message() -> None:
    items = [_msg("developer", "rule one"), _msg("system", "rule two"), _msg("user", "hi"), _msg("developer", "late")]
    assert chat_messages("instructions", items, {}, {}) == [
        {"role": "system", "content": "instructions\n\nrule one\n\nrule two"},
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "late"},  # many chat templates refuse a system message that is not first
    ]
    assert chat_messages(None, [_msg("developer", "only")], {}, {}) == [{"role": "system", "content": "only"}]


def test_input_text_parts_are_joined_into_a_string() -> None:
    item = _msg("user", [{"type": "input_text", "text": "first"}, {"type": "input_text", "text": "second"}])
    assert chat_messages(None, [item], {}, {}) == [{"role": "user", "content": "first\nsecond"}]


def test_input_image_by_url_makes_a_parts_list() -> None:
    item = _msg("user", [{"type": "input_text", "text": "What is this?"},
                         {"type": "input_image", "image_url": "https://example.invalid/cat.png", "detail": "high"}])
    assert chat_messages(None, [item], {}, {}) == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png", "detail": "high"}},
    ]}]


def test_input_image_by_file_id_is_resolved_through_images() -> None:
    url = "data:image/png;base64,iVBORw0KGgo="
    item = _msg("user", [{"type": "input_image", "file_id": "file_abc"}, {"type": "input_text", "text": "and?"}])
    assert chat_messages(None, [item], {}, {"file_abc": url}) == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
        {"type": "text", "text": "and?"},
    ]}]


def test_an_image_that_cannot_be_resolved_is_left_out() -> None:
    item = _msg("user", [{"type": "input_text", "text": "look"}, {"type": "input_image", "file_id": "file_gone"}])
    assert chat_messages(None, [item], {}, {}) == [{"role": "user", "content": "look"}]


def test_input_file_becomes_a_note_with_its_path() -> None:
    item = _msg("user", [{"type": "input_file", "file_id": "file_1", "filename": "sales.csv"},
                         {"type": "input_text", "text": "Summarize it."}])
    [message] = chat_messages(None, [item], {}, {})
    assert message["role"] == "user"
    assert isinstance(message["content"], str)
    note, ask = message["content"].split("\n")
    assert "/mnt/data/sales.csv" in note
    assert ask == "Summarize it."


def test_assistant_output_text_and_refusal() -> None:
    items = [_msg("assistant", [{"type": "output_text", "text": "Sure.", "annotations": []}]),
             _msg("assistant", [{"type": "refusal", "refusal": "I can't help with that."}])]
    assert chat_messages(None, items, {}, {}) == [
        {"role": "assistant", "content": "Sure."}, {"role": "assistant", "content": "I can't help with that."}]


def _call(outputs: list[dict[str, Any]] | None, id_: str = "ci_1", code: str | None = "print(1)") -> dict[str, Any]:
    return {"type": "code_interpreter_call", "id": id_, "status": "completed", "container_id": "cntr_1",
            "code": code, "outputs": outputs}


def test_a_replayed_call_uses_the_stored_tool_result() -> None:
    items = [_msg("user", "go"), _msg("assistant", [{"type": "output_text", "text": "Running."}]),
             _call([{"type": "logs", "logs": "ignored"}]), _msg("assistant", [{"type": "output_text", "text": "1"}])]
    messages = chat_messages(None, items, {"ci_1": "1\n[files written: /mnt/data/a.csv]\n"}, {})
    assert messages == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Running.", "tool_calls": [
            {"id": tool_call_id("ci_1"), "type": "function",
             "function": {"name": "python", "arguments": '{"code": "print(1)"}'}}]},
        {"role": "tool", "tool_call_id": tool_call_id("ci_1"), "content": "1\n[files written: /mnt/data/a.csv]\n"},
        {"role": "assistant", "content": "1"},
    ]


def test_a_replayed_call_without_a_stored_result_renders_its_outputs() -> None:
    messages = chat_messages(None, [_msg("user", "go"), _call([{"type": "logs", "logs": "42\n"}])], {}, {})
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[2]["content"] == "42\n"


def test_a_replayed_call_with_empty_outputs_had_no_output() -> None:
    messages = chat_messages(None, [_call([])], {}, {})
    assert messages[-1]["content"] == "[no output]"


def test_a_replayed_call_without_outputs_says_they_are_not_available() -> None:
    messages = chat_messages(None, [_call(None)], {}, {})
    assert messages[-1]["role"] == "tool"
    assert "output not available" in messages[-1]["content"]


def test_several_calls_and_items_of_other_types() -> None:
    items = [_msg("user", "go"), _call([], "ci_1", "a"), {"type": "reasoning", "id": "rs_1"},
             _call(None, "ci_2", "b")]
    messages = chat_messages(None, items, {"ci_2": "done"}, {})
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == [tool_call_id("ci_1"), tool_call_id("ci_2")]
    assert messages[-1]["content"] == "done"


def test_tool_call_ids_are_nine_letters_and_digits_and_stable() -> None:
    """Mistral's chat templates refuse any other form; the same item always gets the same id."""
    ids = {tool_call_id(f"ci_{n}") for n in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 9 and i.isascii() and i.isalnum() for i in ids)
    assert tool_call_id("call_abc") == tool_call_id("call_abc")


def test_function_outputs_become_tool_text() -> None:
    assert function_output_text("plain") == "plain"
    assert function_output_text([{"type": "input_text", "text": "a"}, {"type": "input_image", "file_id": "f"},
                                 {"type": "input_file", "filename": "r.csv"}]) == "a\n[image]\n[file r.csv]"
