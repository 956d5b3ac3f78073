"""MIME bundles for display/result events, and ANSI stripping for tracebacks."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cellbox.runtime.display import MIME_TYPES, Publisher, ResultHook, mime_bundle, strip_ansi

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def test_mime_bundle_keeps_only_supported_types() -> None:
    data = {
        "text/plain": "1",
        "text/html": "<b>1</b>",
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
        "application/javascript": "alert(1)",
    }
    assert mime_bundle(data) == {"text/plain": "1", "text/html": "<b>1</b>"}


def test_mime_bundle_base64_encodes_binary_payloads() -> None:
    bundle = mime_bundle({"image/png": PNG, "image/jpeg": bytearray(b"\xff\xd8\xff"), "text/plain": "<Figure>"})
    assert bundle["image/png"] == base64.b64encode(PNG).decode("ascii")
    assert base64.b64decode(bundle["image/jpeg"]) == b"\xff\xd8\xff"
    assert bundle["text/plain"] == "<Figure>"


def test_mime_bundle_keeps_text_and_json_values_as_they_are() -> None:
    already_encoded = base64.b64encode(PNG).decode()
    data = {"image/png": already_encoded, "application/json": {"a": [1, 2]}, "image/svg+xml": "<svg/>"}
    assert mime_bundle(data) == data


def test_mime_bundle_skips_missing_values_and_leaves_the_input_alone() -> None:
    data: dict[str, Any] = {"text/plain": None, "text/markdown": "**x**", "image/png": PNG}
    original = dict(data)
    assert mime_bundle(data) == {"text/markdown": "**x**", "image/png": base64.b64encode(PNG).decode()}
    assert data == original
    assert mime_bundle({}) == {}


def test_every_supported_type_survives() -> None:
    data = {mime: f"value of {mime}" for mime in MIME_TYPES}
    assert mime_bundle(data) == data


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[1;32mTraceback\x1b[39;49;00m (most recent call last)", "Traceback (most recent call last)"),
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),
        ("\x1b[2K\x1b[1Gprogress", "progress"),
        ("no escapes [0m here", "no escapes [0m here"),
        ("", ""),
    ],
)
def test_strip_ansi(text: str, plain: str) -> None:
    assert strip_ansi(text) == plain


def test_publisher_emits_display_events(monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    monkeypatch.setattr(Publisher, "emit", lambda *args: emitted.append(args))
    publisher = Publisher()
    publisher.publish({"image/png": PNG, "text/plain": "<Figure>"}, {"image/png": {"width": 10}})
    publisher.publish({"application/javascript": "x"})  # nothing a client can use: no event
    assert emitted == [
        ("display", {"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"},
         {"image/png": {"width": 10}}),
    ]


def test_publisher_without_a_channel_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Publisher, "emit", None)
    Publisher().publish({"text/plain": "x"})  # must not raise


def test_result_hook_emits_result_events(monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    monkeypatch.setattr(ResultHook, "emit", lambda *args: emitted.append(args))
    hook = ResultHook.__new__(ResultHook)  # the hook needs a shell to initialise; this path does not use it
    hook.write_format_data({"text/plain": "42", "text/latex": "$42$"}, None)
    hook.write_format_data({"application/x-unknown": "?"}, {})
    assert emitted == [("result", {"text/plain": "42", "text/latex": "$42$"}, {})]

