"""The OpenAPI helper: bodies shaped like OpenAI's own examples pass, broken ones fail with readable messages."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests import openapi
from tests.openapi import (
    load_spec,
    response_schema,
    spec_path,
    stream_event_schemas,
    validate,
    validate_component,
    validate_error,
    validate_event,
)

# Shapes from /work/shared/reference/openai-api.md and the spec's own x-oaiMeta examples.
CONTAINER: dict[str, Any] = {
    "id": "cntr_682e0e7318108198aa783fd921ff305e08e78805b9fdbb04",
    "object": "container",
    "created_at": 1747857508,
    "status": "running",
    "expires_after": {"anchor": "last_active_at", "minutes": 20},
    "last_active_at": 1747857508,
    "memory_limit": "4g",
    "name": "My Container",
}
CONTAINER_FILE: dict[str, Any] = {
    "id": "cfile_682e0e8a43c88191a7978f477a09bdf5",
    "object": "container.file",
    "created_at": 1747848842,
    "bytes": 880,
    "container_id": "cntr_682e0e7318108198aa783fd921ff305e08e78805b9fdbb04",
    "path": "/mnt/data/88e12fa445d32636f190a0b33daed6cb-tsconfig.json",
    "source": "user",
}
FILE: dict[str, Any] = {
    "id": "file-abc123",
    "object": "file",
    "bytes": 120000,
    "created_at": 1677610602,
    "expires_at": 1680202602,
    "filename": "salesOverview.pdf",
    "purpose": "assistants",
    "status": "processed",
}
ERROR: dict[str, Any] = {
    "error": {
        "message": "Container with id 'cntr_123' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}
RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "completed_at": 1741476550,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4.1",
    "output": [
        {
            "type": "code_interpreter_call",
            "id": "ci_1",
            "status": "completed",
            "container_id": "cntr_1",
            "code": "print(2+2)",
            "outputs": [
                {"type": "logs", "logs": "4\n"},
                {"type": "image", "url": "data:image/png;base64,iVBORw0KGgo="},
            ],
        },
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": "Result is 4. [plot](sandbox:/mnt/data/p.png)",
                    "logprobs": [],
                    "annotations": [
                        {
                            "type": "container_file_citation",
                            "container_id": "cntr_1",
                            "file_id": "cfile_1",
                            "filename": "p.png",
                            "start_index": 13,
                            "end_index": 44,
                        }
                    ],
                }
            ],
        },
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
    "metadata": {},
}


def snapshot_in_progress() -> dict[str, Any]:
    """The Response as `response.created` carries it: in progress, no output, no `usage` key."""
    snap = copy.deepcopy(RESPONSE)
    snap.update(status="in_progress", output=[], completed_at=None)
    del snap["usage"]
    return snap


def violations(excinfo: pytest.ExceptionInfo[AssertionError]) -> str:
    return str(excinfo.value)


# --------------------------------------------------------------------------------------------- spec access


def test_spec_loads_once() -> None:
    spec = load_spec()
    assert spec is load_spec()
    assert spec["openapi"].startswith("3.1")
    assert "/containers/{container_id}" in spec["paths"]


@pytest.mark.parametrize(
    "path",
    ["/containers/{container_id}", "/v1/containers/{container_id}", "/v1/containers/cntr_abc", "/v1/containers/c?x=1"],
)
def test_paths_with_or_without_v1_templates_or_concrete(path: str) -> None:
    assert spec_path(path) == "/containers/{container_id}"
    assert response_schema(path, "GET", 200) == {"$ref": "#/components/schemas/ContainerResource"}


def test_literal_segments_win_over_parameters() -> None:
    assert spec_path("/v1/containers/cntr_1/files") == "/containers/{container_id}/files"
    assert spec_path("/v1/containers/cntr_1/files/cfile_1") == "/containers/{container_id}/files/{file_id}"
    assert (
        spec_path("/v1/containers/cntr_1/files/cfile_1/content") == "/containers/{container_id}/files/{file_id}/content"
    )


def test_response_schema_lookup() -> None:
    assert response_schema("/files", "post", 200) == {"$ref": "#/components/schemas/OpenAIFile"}
    assert response_schema("/responses", "post", 200) == {"$ref": "#/components/schemas/Response"}
    # 429 is a $ref to components/responses/TooManyRequests, followed to its JSON body
    assert response_schema("/containers", "get", 429) == {"$ref": "#/components/schemas/ErrorResponse"}
    # documented without a body, or not documented at all
    assert response_schema("/containers/{container_id}", "delete", 200) is None
    assert response_schema("/containers/{container_id}", "get", 404) is None


def test_unknown_path_or_method_is_a_test_bug() -> None:
    with pytest.raises(AssertionError, match="not a path"):
        response_schema("/v1/sandboxes", "get", 200)
    with pytest.raises(AssertionError, match="no PUT"):
        validate("/containers", "put", 200, {})


# --------------------------------------------------------------------------------------------- containers


def test_container_from_the_reference_passes() -> None:
    validate("/containers/{container_id}", "get", 200, CONTAINER)
    validate("/v1/containers", "post", 200, CONTAINER)
    with_policy = {**CONTAINER, "network_policy": {"type": "allowlist", "allowed_domains": ["api.buildkite.com"]}}
    validate("/v1/containers/cntr_1", "get", 200, with_policy)


def test_the_specs_own_container_example_passes() -> None:
    example = json.loads(load_spec()["components"]["schemas"]["ContainerResource"]["x-oaiMeta"]["example"])
    validate("/containers/{container_id}", "get", 200, example)


def test_container_without_id_fails() -> None:
    body = {k: v for k, v in CONTAINER.items() if k != "id"}
    with pytest.raises(AssertionError) as excinfo:
        validate("/containers/{container_id}", "get", 200, body)
    text = violations(excinfo)
    assert "$: 'id' is a required property" in text
    assert text.count("'id' is a required property") == 1  # the spec lists "id" twice in `required`


def test_container_with_wrong_types_lists_every_violation() -> None:
    body = {**CONTAINER, "created_at": "x", "memory_limit": "2g", "expires_after": {"anchor": "created_at"}}
    with pytest.raises(AssertionError) as excinfo:
        validate("/containers/{container_id}", "get", 200, body)
    text = violations(excinfo)
    assert "3 violation(s)" in text
    assert "$.created_at: 'x' is not of type 'integer'" in text
    assert "$.memory_limit: '2g' is not one of" in text
    assert "$.expires_after.anchor: 'created_at' is not one of ['last_active_at']" in text


def test_container_list_page_passes() -> None:
    other = {**CONTAINER, "id": "cntr_b"}
    page = {
        "object": "list",
        "data": [CONTAINER, other],
        "first_id": CONTAINER["id"],
        "last_id": "cntr_b",
        "has_more": False,
    }
    validate("/v1/containers", "get", 200, page)


def test_container_list_page_checks_its_items_and_envelope() -> None:
    page = {"object": "page", "data": [{**CONTAINER, "status": 1}], "first_id": "a", "last_id": "a"}
    with pytest.raises(AssertionError) as excinfo:
        validate("/v1/containers", "get", 200, page)
    text = violations(excinfo)
    assert "$: 'has_more' is a required property" in text
    assert "$.object: 'page' is not one of ['list']" in text
    assert "$.data[0].status: 1 is not of type 'string'" in text


def test_empty_page_with_null_ids_is_outside_the_spec() -> None:
    # Quirk: the spec requires first_id/last_id and types them as plain strings, so the `null` the reference
    # recommends for an empty page does not validate. Tests of empty pages must special-case these two fields.
    page = {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    with pytest.raises(AssertionError, match=r"\$\.first_id: None is not of type 'string'"):
        validate("/v1/containers", "get", 200, page)


def test_container_delete_has_no_body_schema() -> None:
    validate(
        "/containers/{container_id}", "delete", 200, {"id": "cntr_1", "object": "container.deleted", "deleted": True}
    )


def test_an_undocumented_success_status_fails() -> None:
    with pytest.raises(AssertionError, match="documents only 200, 429"):
        validate("/v1/containers", "post", 201, CONTAINER)


# --------------------------------------------------------------------------------------------- files


def test_container_file_passes() -> None:
    validate("/containers/{container_id}/files", "post", 200, CONTAINER_FILE)
    validate("/v1/containers/cntr_1/files/cfile_1", "get", 200, {**CONTAINER_FILE, "source": "assistant"})
    page = {"object": "list", "data": [CONTAINER_FILE], "first_id": "cfile_1", "last_id": "cfile_1", "has_more": True}
    validate("/containers/{container_id}/files", "get", 200, page)


def test_container_file_without_path_fails() -> None:
    body = {k: v for k, v in CONTAINER_FILE.items() if k != "path"}
    with pytest.raises(AssertionError, match=r"\$: 'path' is a required property"):
        validate("/containers/{container_id}/files/{file_id}", "get", 200, body)


def test_file_object_passes() -> None:
    validate("/files", "post", 200, FILE)
    validate("/v1/files/file-abc123", "get", 200, {k: v for k, v in FILE.items() if k != "expires_at"})
    page = {"object": "list", "data": [FILE], "first_id": "file-abc123", "last_id": "file-abc123", "has_more": False}
    validate("/v1/files", "get", 200, page)
    validate("/v1/files/file-abc123", "delete", 200, {"id": "file-abc123", "object": "file", "deleted": True})


def test_file_object_status_is_required_and_purpose_is_an_enum() -> None:
    # the spec's own OpenAIFile example omits `status`, yet `status` is required
    body = {k: v for k, v in FILE.items() if k != "status"} | {"purpose": "evals"}
    with pytest.raises(AssertionError) as excinfo:
        validate("/files", "post", 200, body)
    text = violations(excinfo)
    assert "$: 'status' is a required property" in text
    assert "$.purpose: 'evals' is not one of" in text


# --------------------------------------------------------------------------------------------- errors


def test_error_envelope_passes() -> None:
    validate_error(ERROR)
    validate_error({"error": {"message": "No such File object: file-1", "type": "invalid_request_error", "param": "id",
                              "code": "not_found"}})  # fmt: skip
    # undocumented error statuses fall back to the envelope
    validate("/v1/containers/cntr_123", "get", 404, ERROR)
    validate("/v1/containers", "get", 429, ERROR)
    # the spec gives DELETE /responses/{id} 404 the bare `Error`; the API sends the envelope
    validate("/v1/responses/resp_1", "delete", 404, ERROR)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": {"message": "x", "type": "invalid_request_error"}}, "$.error: 'code' is a required property"),
        ({"error": {"message": 1, "type": "t", "param": None, "code": None}}, "$.error.message: 1 is not of type"),
        ({"error": {"message": "x", "type": "t", "param": 3, "code": None}}, "$.error.param: 3 matches none of"),
        ({"message": "x", "type": "t", "param": None, "code": None}, "$: 'error' is a required property"),
        ({"error": "boom"}, "$.error: 'boom' is not of type 'object'"),
    ],
)
def test_malformed_error_envelope_fails(body: dict[str, Any], expected: str) -> None:
    with pytest.raises(AssertionError) as excinfo:
        validate_error(body)
    assert expected in violations(excinfo)
    with pytest.raises(AssertionError):
        validate("/v1/containers/cntr_1", "get", 404, body)


# --------------------------------------------------------------------------------------------- responses


def test_response_object_passes() -> None:
    validate("/v1/responses", "post", 200, RESPONSE)
    validate("/v1/responses/resp_1", "get", 200, RESPONSE)
    validate_component("CodeInterpreterToolCall", RESPONSE["output"][0])


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("usage", "$.usage: None is not of type 'object'"),  # omit `usage` until it is known
        ("user", "$.user: None is not of type 'string'"),  # omit `user` rather than send null
        ("text", "$.text: None is not of type 'object'"),
    ],
)
def test_response_fields_that_must_not_be_null(field: str, expected: str) -> None:
    with pytest.raises(AssertionError) as excinfo:
        validate("/v1/responses", "post", 200, {**RESPONSE, field: None})
    assert expected in violations(excinfo)


def test_nested_union_failures_point_at_the_field() -> None:
    body = copy.deepcopy(RESPONSE)
    body["output"][0]["status"] = "bogus"
    body["output"][1]["content"][0]["annotations"][0]["end_index"] = "44"
    with pytest.raises(AssertionError) as excinfo:
        validate("/v1/responses", "post", 200, body)
    text = violations(excinfo)
    assert "the option for type 'code_interpreter_call' fails with" in text
    assert "$.output[0].status: 'bogus' is not one of" in text
    assert "$.output[1].content[0].annotations[0].end_index: '44' is not of type 'integer'" in text


# --------------------------------------------------------------------------------------------- stream events


def test_every_stream_event_type_has_a_schema() -> None:
    schemas = stream_event_schemas()
    for kind in [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.content_part.done",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "error",
    ]:
        assert kind in schemas, kind


def test_response_created_event_passes() -> None:
    validate_event({"type": "response.created", "sequence_number": 0, "response": snapshot_in_progress()})


def test_response_created_event_with_a_string_sequence_number_fails() -> None:
    event = {"type": "response.created", "sequence_number": "0", "response": snapshot_in_progress()}
    with pytest.raises(AssertionError) as excinfo:
        validate_event(event)
    text = violations(excinfo)
    assert "stream event 'response.created'" in text
    assert "$.sequence_number: '0' is not of type 'integer'" in text


def test_response_created_event_with_null_usage_fails() -> None:
    event = {"type": "response.created", "sequence_number": 0, "response": {**snapshot_in_progress(), "usage": None}}
    with pytest.raises(AssertionError, match=r"\$\.response\.usage: None is not of type 'object'"):
        validate_event(event)


def test_a_code_interpreter_turn_validates_event_by_event() -> None:
    call = {"type": "code_interpreter_call", "id": "ci_1", "status": "in_progress", "container_id": "cntr_1"}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}
    annotation = RESPONSE["output"][1]["content"][0]["annotations"][0]
    ids = {"item_id": "ci_1", "output_index": 0}
    text_ids = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": snapshot_in_progress()},
        {"type": "response.in_progress", "response": snapshot_in_progress()},
        {"type": "response.output_item.added", "output_index": 0, "item": {**call, "code": "", "outputs": None}},
        {"type": "response.code_interpreter_call.in_progress", **ids},
        {"type": "response.code_interpreter_call_code.delta", **ids, "delta": "print(", "obfuscation": "xk2"},
        {"type": "response.code_interpreter_call_code.done", **ids, "code": "print(2+2)"},
        {"type": "response.code_interpreter_call.interpreting", **ids},
        {"type": "response.code_interpreter_call.completed", **ids},
        {"type": "response.output_item.done", "output_index": 0, "item": RESPONSE["output"][0]},
        {"type": "response.output_item.added", "output_index": 1, "item": message},
        {"type": "response.content_part.added", **text_ids, "part": part},
        {"type": "response.output_text.delta", **text_ids, "delta": "Result", "logprobs": []},
        {"type": "response.output_text.done", **text_ids, "text": "Result is 4.", "logprobs": []},
        {"type": "response.output_text.annotation.added", **text_ids, "annotation_index": 0, "annotation": annotation},
        {"type": "response.content_part.done", **text_ids, "part": RESPONSE["output"][1]["content"][0]},
        {"type": "response.output_item.done", "output_index": 1, "item": RESPONSE["output"][1]},
        {"type": "response.completed", "response": RESPONSE},
        {"type": "error", "code": None, "message": "boom", "param": None},
    ]
    for number, event in enumerate(events):
        validate_event({**event, "sequence_number": number})


def test_text_delta_needs_logprobs() -> None:
    event = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "content_index": 0, "delta": "d"}
    with pytest.raises(AssertionError, match="'logprobs' is a required property"):
        validate_event({**event, "sequence_number": 3})


@pytest.mark.parametrize("event", [{"type": "response.bogus", "sequence_number": 0}, {"sequence_number": 0}, []])
def test_unknown_or_untyped_events_fail(event: Any) -> None:
    with pytest.raises(AssertionError):
        validate_event(event)


# --------------------------------------------------------------------------------------------- internals


def test_openapi_nullable_is_translated() -> None:
    translate = openapi._json_schema
    assert translate({"type": "string", "nullable": True}) == {"type": ["string", "null"]}
    assert translate({"type": "string", "enum": ["a"], "nullable": True}) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert translate({"$ref": "#/x", "nullable": True}) == {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}
    assert translate({"type": "integer", "nullable": False}) == {"type": "integer"}
    # end to end on spec components that still use `nullable`
    validate_component("CreateCompletionRequest", {"model": "m", "prompt": None, "best_of": None, "suffix": None})
    with pytest.raises(AssertionError, match=r"\$\.best_of"):
        validate_component("CreateCompletionRequest", {"model": "m", "prompt": "p", "best_of": "1"})


def test_validators_are_built_once_per_schema() -> None:
    validate("/v1/responses", "post", 200, RESPONSE)
    built = openapi._validator.cache_info().currsize
    for _ in range(3):
        validate("/v1/responses", "post", 200, RESPONSE)
    assert openapi._validator.cache_info().currsize == built
