"""Rich output: IPython's display publisher and result hook, turned into ``display`` / ``result`` events."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher

# The MIME types a code-interpreter client can use; anything else (widgets, JS) is dropped.
MIME_TYPES = (
    "text/plain",
    "text/html",
    "text/markdown",
    "text/latex",
    "image/png",
    "image/jpeg",
    "image/svg+xml",
    "application/json",
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

Emit = Callable[[str, dict[str, Any], dict[str, Any]], None]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def mime_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the supported MIME types; binary payloads become base64 text, as in Jupyter."""
    bundle: dict[str, Any] = {}
    for mime in MIME_TYPES:
        value = data.get(mime)
        if value is None:
            continue
        if isinstance(value, bytes | bytearray):
            value = base64.b64encode(value).decode("ascii")
        bundle[mime] = value
    return bundle


class Publisher(DisplayPublisher):
    """``display(...)``, matplotlib figures and friends: sent as ``display`` events."""

    emit: Emit | None = None

    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: str | None = None,
        *,
        transient: dict[str, Any] | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        bundle = mime_bundle(data)
        if bundle and Publisher.emit is not None:
            Publisher.emit("display", bundle, dict(metadata or {}))

    def clear_output(self, wait: bool = False) -> None:
        pass


class ResultHook(DisplayHook):
    """The value of the last expression (``execute_result`` in Jupyter): sent as a ``result`` event."""

    emit: Emit | None = None

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
        bundle = mime_bundle(format_dict)
        if bundle and ResultHook.emit is not None:
            ResultHook.emit("result", bundle, dict(md_dict or {}))

    def finish_displayhook(self) -> None:
        pass
