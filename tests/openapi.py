"""Validate Cellbox's JSON bodies against OpenAI's published OpenAPI description.

The spec (``/work/shared/spec/openai-openapi.yaml``, OpenAPI 3.1) is the referee for wire compatibility::

    from tests.openapi import validate, validate_error, validate_event

    validate("/v1/containers/{container_id}", "get", 200, body)   # a template ...
    validate("/v1/containers/cntr_abc", "get", 200, body)         # ... or a concrete path
    validate_error(body)                                          # {"error": {...}} envelope
    validate_event(event)                                         # one Responses stream event

Every helper raises ``AssertionError`` listing each violation as ``$.json.path: message``.

How the spec is read:

* ``$ref`` s resolve against the whole document, registered with ``referencing`` under :data:`SPEC_URI`.
* OpenAPI 3.0 ``nullable: true`` (still present in about 110 places) is rewritten into JSON Schema:
  ``type: T`` becomes ``type: [T, "null"]`` (``null`` is added to an ``enum``), and any other schema
  (``$ref``, ``anyOf``, ``oneOf``) is wrapped as ``anyOf: [schema, {type: null}]``.
  Everywhere else ``null`` is allowed only where the spec says so (``anyOf: [..., {type: "null"}]``);
  no schema reachable from the container, file and Responses paths uses ``nullable``.
* ``discriminator``, ``example`` and ``x-*`` keys are annotations that Draft 2020-12 ignores; ``format``
  (``unixtime``, ``uri``, ...) is not asserted.
* An error status (>= 400) that the operation does not describe is checked against ``ErrorResponse``,
  the envelope OpenAI sends for every error (the spec lists only 200 and 429 for most paths).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path("/work/shared/spec/openai-openapi.yaml")
SPEC_URI = "urn:openai:openapi"
API_PREFIX = "/v1"

_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_MAX_REPR = 160
_MAX_ERRORS = 50


# --------------------------------------------------------------------------------------------- loading


@functools.cache
def load_spec() -> dict[str, Any]:
    """The spec exactly as published (parsed once per process; about 1 s with libyaml)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as fh:
        spec = yaml.load(fh, Loader=loader)
    if not isinstance(spec, dict) or "paths" not in spec:
        raise RuntimeError(f"{SPEC_PATH} is not an OpenAPI document")
    return spec


def _json_schema(node: Any) -> Any:
    """A copy of ``node`` with OpenAPI 3.0 ``nullable`` rewritten into JSON Schema."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items()}
    nullable = out.pop("nullable", None)
    if nullable is not True:
        return out
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            out["type"] = [*types, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if not any(key in out for key in ("$ref", "anyOf", "oneOf", "allOf", "not", "const")):
        return out  # an unconstrained schema already accepts null
    keep = {k: v for k, v in out.items() if k in ("description", "title", "default", "deprecated")}
    rest = {k: v for k, v in out.items() if k not in keep}
    return {**keep, "anyOf": [rest, {"type": "null"}]}


@functools.cache
def _registry() -> Registry:
    document = _json_schema(load_spec())
    return Registry().with_resource(SPEC_URI, Resource.from_contents(document, default_specification=DRAFT202012))


def _document() -> dict[str, Any]:
    return _registry().contents(SPEC_URI)


# --------------------------------------------------------------------------------------------- pointers


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(*tokens: str) -> str:
    return "/" + "/".join(_escape(token) for token in tokens)


def _at(document: Any, pointer: str) -> Any:
    node = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _follow_local_ref(document: dict[str, Any], pointer: str) -> str:
    """Follow ``{"$ref": "#/..."}`` objects (OpenAPI ``Response`` references) to their target."""
    for _ in range(16):
        node = _at(document, pointer)
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#/")):
            return pointer
        pointer = ref[1:]
    raise RuntimeError(f"$ref loop at {pointer}")


# --------------------------------------------------------------------------------------------- paths


@functools.cache
def _path_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    patterns = []
    for template in load_spec()["paths"]:
        regex = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}/]+\})", template)
        )
        patterns.append((re.compile(regex + r"\Z"), template))
    # literal segments beat parameters: "/containers/{container_id}/files" before "/containers/{a}/{b}"
    patterns.sort(key=lambda pair: (pair[1].count("{"), -len(pair[1])))
    return tuple(patterns)


def spec_path(path: str) -> str:
    """The spec's path template for ``path`` (a template or a concrete path, with or without ``/v1``)."""
    path = path.split("?", 1)[0]
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        path = path[len(API_PREFIX) :] or "/"
    paths = load_spec()["paths"]
    if path in paths:
        return path
    for regex, template in _path_patterns():
        if regex.match(path):
            return template
    raise AssertionError(f"{path!r} is not a path in the OpenAI spec")


def _operation_pointer(path: str, method: str) -> str:
    template = spec_path(path)
    method = method.lower()
    if method not in _HTTP_METHODS or method not in load_spec()["paths"][template]:
        raise AssertionError(f"the OpenAI spec has no {method.upper()} {template}")
    return _pointer("paths", template, method)


def _status_keys(status: int | str) -> Iterable[str]:
    text = str(status)
    yield text
    if text.isdigit():
        yield text[0] + "XX"
        yield text[0] + "xx"
    yield "default"


def _documented_statuses(path: str, method: str) -> list[str]:
    return list(_at(_document(), _operation_pointer(path, method)).get("responses", {}))


def _response_schema_pointer(path: str, method: str, status: int | str) -> str | None:
    document = _document()
    op_pointer = _operation_pointer(path, method)
    responses = _at(document, op_pointer).get("responses", {})
    for key in _status_keys(status):
        if key in responses:
            response = _follow_local_ref(document, op_pointer + _pointer("responses", key))
            content = _at(document, response).get("content") or {}
            if "application/json" not in content or "schema" not in content["application/json"]:
                return None
            return response + _pointer("content", "application/json", "schema")
    return None


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    """The JSON schema of the ``application/json`` response, as published (``$ref`` s unresolved).

    ``status`` is looked up exactly, then as ``4XX``-style ranges, then as ``default``. ``None`` when the spec
    describes no JSON body for it (for example ``DELETE /containers/{container_id}`` 200, or an undocumented 404).
    Raises ``AssertionError`` for a path or method the spec does not have.
    """
    pointer = _response_schema_pointer(path, method, status)
    return None if pointer is None else _at(load_spec(), pointer)


# --------------------------------------------------------------------------------------------- validation


@functools.cache
def _validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at ``pointer`` inside the spec (cached: one per schema location)."""
    ref = SPEC_URI + "#" + quote(pointer, safe="/~")
    return Draft202012Validator({"$ref": ref}, registry=_registry())


def _json_path(error: ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _closest(error: ValidationError) -> tuple[str, list[ValidationError]]:
    """The errors of the union option ``error.instance`` was most likely meant to match.

    Unions in the spec are tagged on ``type``: an option whose errors never touch ``type`` is the one the
    instance's ``type`` selected. Otherwise fall back to jsonschema's ``best_match``.
    """
    instance = error.instance
    if isinstance(instance, dict) and "type" in instance:
        options: dict[Any, list[ValidationError]] = {}
        for sub in error.context or ():
            options.setdefault(sub.relative_schema_path[0], []).append(sub)
        tagged = [errs for errs in options.values() if not any(list(e.relative_path)[:1] == ["type"] for e in errs)]
        if tagged:
            return f"the option for type {instance['type']!r} fails with", min(tagged, key=len)
    closest = best_match(error.context or ())
    return "closest option fails with", [] if closest is None else [closest]


def _describe(error: ValidationError, depth: int = 0) -> list[str]:
    indent = "  " * (depth + 1)
    keyword = error.validator
    if keyword in ("anyOf", "oneOf") and error.context:
        options = f"{len(error.validator_value)} {keyword} options"
        lines = [f"{indent}{_json_path(error)}: {_short(error.instance)} matches none of the {options}"]
        label, closest = _closest(error)
        if closest and depth < 8:
            lines.append(f"{indent}  {label}:")
            for sub in closest:
                lines.extend(_describe(sub, depth + 2))
        return lines
    message = error.message
    if len(message) > 2 * _MAX_REPR:
        message = message[: 2 * _MAX_REPR - 3] + "..."
    return [f"{indent}{_json_path(error)}: {message}  [{keyword}]"]


def _check(pointer: str, instance: Any, what: str) -> None:
    unique: dict[tuple[str, str], ValidationError] = {}
    for error in _validator(pointer).iter_errors(instance):
        # the spec repeats names in some `required` lists (ContainerResource lists "id" twice)
        unique.setdefault((_json_path(error), error.message), error)
    errors = [unique[key] for key in sorted(unique)]
    if not errors:
        return
    lines = [f"{what}: {len(errors)} violation(s) of the OpenAI spec (schema {pointer_label(pointer)}):"]
    for error in errors[:_MAX_ERRORS]:
        lines.extend(_describe(error))
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more")
    lines.append(f"  body: {_short(instance)}")
    raise AssertionError("\n".join(lines))


def pointer_label(pointer: str) -> str:
    """A short name for a schema location: the component name if it is a plain ``$ref`` to one."""
    prefix = "/components/schemas/"
    if pointer.startswith(prefix) and "/" not in pointer[len(prefix) :]:
        return pointer[len(prefix) :].replace("~1", "/").replace("~0", "~")
    node = _at(_document(), pointer)
    ref = node.get("$ref") if isinstance(node, dict) else None
    if isinstance(ref, str) and ref.startswith("#/components/schemas/") and len(node) == 1:
        return ref.rsplit("/", 1)[1]
    return "#" + pointer


def validate(path: str, method: str, status: int, body: object) -> None:
    """Assert that ``body`` is what the spec says ``method path`` returns with ``status``.

    A status the operation documents without a JSON body (``DELETE /containers/{container_id}`` 200) passes any
    body; a success status it does not document at all (a 201 where the spec says 200) fails. An error status
    (>= 400) is checked against ``ErrorResponse`` when the operation documents no schema for it, or documents the
    bare inner ``Error`` object (``DELETE /responses/{response_id}`` 404, a spec slip: the API sends the
    ``{"error": {...}}`` envelope).
    """
    what = f"{method.upper()} {spec_path(path)} {status}"
    pointer = _response_schema_pointer(path, method, status)
    if int(status) >= 400 and (pointer is None or pointer_label(pointer) == "Error"):
        pointer = _pointer("components", "schemas", "ErrorResponse")
    if pointer is None:
        documented = _documented_statuses(path, method)
        if not any(key in documented for key in _status_keys(status)):
            raise AssertionError(f"{what}: the OpenAI spec documents only {', '.join(documented)} for this operation")
        return
    _check(pointer, body, what)


def validate_component(name: str, instance: object) -> None:
    """Assert that ``instance`` matches ``components/schemas/<name>`` (e.g. ``CodeInterpreterToolCall``)."""
    if name not in _document()["components"]["schemas"]:
        raise AssertionError(f"the OpenAI spec has no schema {name!r}")
    _check(_pointer("components", "schemas", name), instance, name)


def validate_error(body: object) -> None:
    """Assert that ``body`` is the error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    _check(_pointer("components", "schemas", "ErrorResponse"), body, "error body")


# --------------------------------------------------------------------------------------------- stream events


def _type_values(schema: dict[str, Any], document: dict[str, Any], depth: int = 0) -> set[str]:
    """The values a schema pins its ``type`` property to (``enum`` or ``const``), looking through ``allOf``/``$ref``."""
    if depth > 8 or not isinstance(schema, dict):
        return set()
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        return _type_values(_at(document, ref[1:]), document, depth + 1)
    found: set[str] = set()
    prop = (schema.get("properties") or {}).get("type")
    if isinstance(prop, dict):
        if "const" in prop:
            found.add(prop["const"])
        found.update(value for value in prop.get("enum", ()) if isinstance(value, str))
    for sub in schema.get("allOf", ()):
        found |= _type_values(sub, document, depth + 1)
    return found


def stream_event_schemas() -> Mapping[str, str]:
    """``event type -> pointer`` of its schema, from the members of ``ResponseStreamEvent``."""
    return _stream_event_schemas()


@functools.cache
def _stream_event_schemas() -> Mapping[str, str]:
    document = _document()
    union_pointer = _pointer("components", "schemas", "ResponseStreamEvent")
    union = _at(document, union_pointer)
    key = next(k for k in ("anyOf", "oneOf") if k in union)
    out: dict[str, str] = {}
    for index, member in enumerate(union[key]):
        ref = member.get("$ref")
        pointer = ref[1:] if isinstance(ref, str) and ref.startswith("#/") else union_pointer + f"/{key}/{index}"
        for value in _type_values(member, document):
            out.setdefault(value, pointer)
    return MappingProxyType(out)


def validate_event(event: dict[str, Any]) -> None:
    """Assert that ``event`` is a valid Responses streaming event (dispatched on ``event["type"]``)."""
    if not isinstance(event, dict):
        raise AssertionError(f"a stream event must be a JSON object, got {_short(event)}")
    kind = event.get("type")
    schemas = stream_event_schemas()
    if kind not in schemas:
        raise AssertionError(f"stream event type {kind!r} is not in ResponseStreamEvent; known: {sorted(schemas)}")
    _check(schemas[kind], event, f"stream event {kind!r}")
