"""create_app(settings): the FastAPI application; its lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import Route

from cellbox import __version__, web
from cellbox.api import errors, mcp
from cellbox.api.access_log import AccessLog
from cellbox.api.hosts import LoopbackHosts
from cellbox.api.limits import BodyLimit
from cellbox.api.peers import PeersOnly
from cellbox.api.relay import Relay
from cellbox.api.routes import (
    container_files,
    containers,
    conversations,
    files,
    health,
    metrics,
    models,
    responses,
)
from cellbox.config import Settings
from cellbox.services.wiring import Services


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The app; it builds, starts and stops its own services, unless given ones its caller already started
    (and will stop), as `cellbox serve` does to report a failed start in one line."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with mcp_server.session_manager.run():
            if services is not None:
                app.state.services = services
                yield
                return
            owned = Services(settings)
            try:
                await owned.start()
                app.state.services = owned
                yield
            finally:
                await owned.aclose()

    # The docs' assets come from a package, not a CDN: /docs works on a machine without internet.
    app = FastAPIOffline(title="Cellbox", version=__version__, lifespan=lifespan, docs_url="/docs",
                  description="OpenAI-compatible Code Interpreter: Files, Containers, Container files, Responses "
                              "with the code_interpreter tool, Conversations, and Cellbox's own "
                              "/v1/containers/{id}/execute.")
    errors.install(app)
    app.add_middleware(Relay)  # innermost of ours: the Host and body checks apply to relayed requests too
    if settings.role == "node":
        app.add_middleware(PeersOnly)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(LoopbackHosts)
    app.add_middleware(AccessLog)
    # Routes are matched in order, a few microseconds each: the most used come first (BENCHMARKS.md, stop 8).
    app.include_router(health.router)
    for module in (containers, container_files, files, responses, conversations, models):
        app.include_router(module.router, prefix="/v1")
    app.include_router(metrics.router)
    current = lambda: app.state.services  # noqa: E731 - the services the lifespan started
    mcp_server = mcp.build(current)
    mcp_app = mcp_server.streamable_http_app(streamable_http_path="/mcp", host=settings.host)
    app.router.routes.append(Route("/mcp", mcp.Authenticated(mcp_app.routes[0].endpoint, current)))  # type: ignore[attr-defined]
    # vLLM's tool server: discovery carries no key (the tools check it when called); see api/mcp.py.
    for route in mcp_server.sse_app(sse_path="/mcp/sse", message_path="/mcp/messages/", host=settings.host).routes:
        if isinstance(route, Route):  # the stream itself: keyless, so bounded
            route = Route(route.path, mcp.Bounded(route.app), methods=["GET"])
        app.router.routes.append(route)
    app.router.routes.extend(web.routes())  # the playground at /, its assets under /playground
    return app
