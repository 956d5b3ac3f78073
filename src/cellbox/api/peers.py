"""A node (``CELLBOX_ROLE=node``) serves the servers of its cluster only: every request but the probes (/health and
/metrics) must carry the cluster's node token, so a node's port reached from outside answers nothing else."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from cellbox.api.errors import error_response
from cellbox.errors import CellboxError, Unauthenticated
from cellbox.services.remote import NODE_TOKEN
from cellbox.services.wiring import Services

PROBES = ("/health", "/metrics")
_TOKEN = NODE_TOKEN.encode()


class PeersOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBES:
            services: Services = scope["app"].state.services
            token = next((v.decode("latin-1") for k, v in scope["headers"] if k == _TOKEN), None)
            try:
                if not services.keys.peer(token):
                    raise Unauthenticated("This server is a node: it answers the servers of its cluster only. "
                                          "Send requests to an api server.")
            except CellboxError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
