"""A stateful IPython session that runs one cell at a time and reports everything as events.

The shell is built once in the forkserver (so every container starts warm) and attached to its channel
in the child. Timeouts arrive as SIGINT and become a KeyboardInterrupt in the user's code only.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.core.profiledir import ProfileDir
from traitlets import Type
from traitlets.config import Config

from cellbox.runtime.display import Publisher, ResultHook, quiet_pyplot, strip_ansi, warm_figures
from cellbox.runtime.protocol import DONE, ERROR, Message
from cellbox.runtime.streams import FdPump, Outbox, OutputStream, StreamSink

OUTPUT_LIMIT = 1024 * 1024


class CellShell(InteractiveShell):
    """InteractiveShell whose display, results and tracebacks go to the channel instead of a terminal."""

    displayhook_class = Type(ResultHook)
    display_pub_class = Type(Publisher)
    on_error: Any = None

    def enable_gui(self, gui: str | None = None) -> None:
        """No event loop to integrate: figures are rendered by the inline backend after each cell."""

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        if CellShell.on_error is not None:
            CellShell.on_error(etype.__name__, str(evalue), [strip_ansi(line) for line in stb])


def build_shell() -> CellShell:
    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.autocall = 0
    shell = CellShell.instance(config=config)
    try:
        import matplotlib  # noqa: F401  (only wire up figures when matplotlib is installed)
    except ImportError:
        return shell
    shell.enable_matplotlib("inline")  # figures come back as PNG after each cell, as in a notebook
    quiet_pyplot()
    warm_figures()
    return shell


class Executor:
    """Runs code in the shell and turns its effects into protocol events for one request at a time."""

    def __init__(self, shell: CellShell) -> None:
        self.shell = shell
        self._outbox: Outbox | None = None
        self._sink: StreamSink | None = None
        self._pump: FdPump | None = None
        self._request_id: str | None = None
        self._running = False

    def attach(self, outbox: Outbox) -> None:
        """Bind the session to its channel: capture output, route rich output, arm the interrupt."""
        self._outbox = outbox
        self._sink = StreamSink(outbox.send, OUTPUT_LIMIT)
        self._pump = FdPump(self._sink)
        self._pump.capture()
        sys.stdout = OutputStream("stdout", self._sink, 1)
        sys.stderr = OutputStream("stderr", self._sink, 2)
        Publisher.emit = ResultHook.emit = self._emit_rich
        CellShell.on_error = self._emit_error
        signal.signal(signal.SIGINT, self._on_interrupt)

    def settle_in(self, home: str) -> None:
        """Forget the template's host directories (its IPython profile, matplotlib's config and cache): code in
        the container must not learn where the server keeps its data. Called once in each new session."""
        self.shell.home_dir = home
        self.shell.ipython_dir = f"{home}/.ipython"
        self.shell.profile_dir = ProfileDir.create_profile_dir_by_name(self.shell.ipython_dir, "default")
        matplotlib = sys.modules.get("matplotlib")
        if matplotlib is None:
            return
        config = f"{home}/.matplotlib"
        matplotlib.get_configdir = matplotlib.get_cachedir = lambda: config
        style = sys.modules.get("matplotlib.style")
        if style is not None:
            style.USER_LIBRARY_PATHS[:] = [f"{config}/stylelib"]
        texmanager = sys.modules.get("matplotlib.texmanager")
        if texmanager is not None:
            texmanager.TexManager._cache_dir = f"{config}/tex.cache"

    def warm_up(self) -> None:
        """Run a cell that leaves no trace (no result, no history, no output) and format a value. A fork's first
        cell otherwise writes to ~900 of the template's pages (copy-on-write faults: 5 ms of a 7 ms first
        ``1+1`` here, BENCHMARKS.md stop 13): a warm-pool container pays that while it waits instead. Every
        container that runs code copies those pages anyway."""
        self.shell.run_cell("None", store_history=False)
        self.shell.display_formatter.format(2)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True  # IPython leaves this frame out: the traceback ends in the user's code
        if self._running:
            raise KeyboardInterrupt

    def _send(self, message: Message) -> None:
        assert self._outbox is not None
        message["id"] = self._request_id
        self._outbox.send(message)

    def _emit_rich(self, kind: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        assert self._sink is not None
        self._sink.flush()  # keep text and rich output in the order they happened
        self._send({"type": kind, "data": data, "metadata": metadata})

    def _emit_error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        assert self._sink is not None
        self._sink.flush()
        self._send({"type": ERROR, "ename": ename, "evalue": evalue, "traceback": traceback})

    def execute(self, request_id: str, code: str, output_limit: int | None = None) -> None:
        assert self._sink is not None
        assert self._pump is not None
        self._request_id = request_id
        self._sink.begin(request_id, output_limit)
        self._pump.set_active(True)
        status = "ok"
        try:
            try:
                self._running = True
                result = self.shell.run_cell(code, store_history=True)
            finally:
                self._running = False
            if result.error_before_exec is not None or result.error_in_exec is not None:
                interrupted = isinstance(result.error_in_exec, KeyboardInterrupt)
                status = "interrupted" if interrupted else "error"
        except KeyboardInterrupt:  # landed in IPython's own machinery rather than the user's code
            status = "interrupted"
            self._emit_error("KeyboardInterrupt", "", ["KeyboardInterrupt"])
        finally:
            self._pump.set_active(False)
            self._pump.drain()
            self._sink.end()
        self._send({"type": DONE, "status": status, "execution_count": self.shell.execution_count - 1})
        self._request_id = None

