"""The runtime's request loop: read a request, dispatch it through a table of handlers, repeat until EOF."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from cellbox.runtime.executor import Executor
from cellbox.runtime.protocol import EXECUTE, READY, Message, recv_message
from cellbox.runtime.streams import Outbox

Handler = Callable[[Executor, Outbox, Message], None]


def _execute(executor: Executor, outbox: Outbox, request: Message) -> None:
    code = request.get("code")
    if not isinstance(code, str):
        outbox.send({"type": "done", "id": request.get("id"), "status": "error", "execution_count": None})
        return
    executor.execute(str(request.get("id")), code, request.get("output_limit"))


HANDLERS: dict[str, Handler] = {EXECUTE: _execute}


def serve(sock: socket.socket, executor: Executor) -> None:
    """Serve requests on ``sock`` until the host closes it."""
    outbox = Outbox(sock)
    executor.attach(outbox)
    outbox.send({"type": READY, "id": None, "python": sys.version.split()[0]})
    while True:
        request = recv_message(sock)
        if request is None:
            return
        handler = HANDLERS.get(request["type"])
        if handler is not None:
            handler(executor, outbox, request)
