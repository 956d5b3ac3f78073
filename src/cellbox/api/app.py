"""create_app(settings): the FastAPI application; its lifespan owns every resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cellbox import __version__
from cellbox.api import errors
from cellbox.api.routes import container_files, containers, files, health, responses
from cellbox.config import Settings
from cellbox.services.wiring import Services


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        try:
            await services.start()
            app.state.services = services
            yield
        finally:
            await services.aclose()

    app = FastAPI(title="Cellbox", version=__version__, lifespan=lifespan, docs_url="/docs",
                  description="OpenAI-compatible Code Interpreter: Files, Containers, Container files, Responses "
                              "with the code_interpreter tool, and Cellbox's own /v1/containers/{id}/execute.")
    errors.install(app)
    for module in (files, containers, container_files, responses):
        app.include_router(module.router, prefix="/v1")
    app.include_router(health.router)
    return app
