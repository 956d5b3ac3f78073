"""Rich output: IPython's display publisher and result hook, turned into ``display`` / ``result`` events."""

from __future__ import annotations

import base64
import re
import sys
import warnings
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


def quiet_pyplot() -> None:
    """Stop pyplot redrawing every changed figure after each cell: that is for GUI windows. An inline figure is
    drawn to PNG right after by the backend anyway, so that draw, a third of a small plot's time, was thrown away
    (BENCHMARKS.md, stop 8). The PNGs are the same bytes. ``plt.ion()`` puts it back, as in matplotlib."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.uninstall_repl_displayhook()


def warm_figures() -> None:
    """In the template: draw one throwaway figure to PNG the way an inline figure is drawn, so the one-time work
    of a process's first figure (Agg, text layout, the PNG writer, the tight bounding box) is done before the
    fork, not in every container's first plot. Without pyplot: no figure number is used and nothing is left
    for a container to see."""
    if "matplotlib.pyplot" not in sys.modules:
        return  # not preloaded: containers pay for matplotlib when they import it, and for this with it
    from IPython.core.pylabtools import print_figure
    from matplotlib.figure import Figure

    figure = Figure()
    figure.add_subplot().plot([1, 2, 3])
    print_figure(figure, "png", bbox_inches="tight")


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

    def cull_cache(self) -> None:
        """Forget the oldest results as IPython does every 200 past 1000, without its warning: that would land in
        the code's output, and a model reads it as part of what its code said."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().cull_cache()

    def write_format_data(self, format_dict: dict[str, Any], md_dict: dict[str, Any] | None = None) -> None:
        bundle = mime_bundle(format_dict)
        if bundle and ResultHook.emit is not None:
            ResultHook.emit("result", bundle, dict(md_dict or {}))

    def finish_displayhook(self) -> None:
        pass
