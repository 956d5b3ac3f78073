"""One access-log line per request: method, path, status, duration and project. Never bodies, query strings,
headers or keys (a query may hold file names; a header, a key)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("cellbox.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            project = scope.get("state", {}).get("project", "-")
            log.info("%s %s %d %.1fms project=%s", scope["method"], scope["path"], status,
                     (time.perf_counter() - started) * 1000, project)
