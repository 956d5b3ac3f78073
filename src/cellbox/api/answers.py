"""JSON answers for the routes that have no response model because they may also stream: the same bytes FastAPI
would send, without its ``jsonable_encoder`` walk over every value (0.1-0.3 ms a request; BENCHMARKS.md, stop 8)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


def answer(content: BaseModel | dict[str, Any]) -> JSONResponse:
    """``content`` as FastAPI renders a route's plain return value: JSON types, by alias, through ``json.dumps``."""
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json", by_alias=True)
    return JSONResponse(content)
