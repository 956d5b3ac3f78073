"""The ONE place that turns errors into HTTP: OpenAI's error envelope and the right status.

Deterministic failures are 4xx, never 409 or 5xx: the SDK retries those and would run code twice.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cellbox.errors import (
    CellboxError,
    Expired,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    SandboxClosed,
    SandboxFailure,
    SandboxUnavailable,
    StoreUnavailable,
    TooLarge,
    Unauthenticated,
    UpstreamRejected,
    UpstreamUnavailable,
)

log = logging.getLogger(__name__)

# (error class, HTTP status, OpenAI error type, code) — first match wins, so subclasses come first.
MAPPING: list[tuple[type[CellboxError], int, str, str | None]] = [
    (TooLarge, 413, "invalid_request_error", "file_too_large"),
    (InvalidInput, 400, "invalid_request_error", None),
    (Unauthenticated, 401, "invalid_request_error", "invalid_api_key"),
    (Forbidden, 403, "invalid_request_error", "host_not_allowed"),
    (RateLimited, 429, "rate_limit_exceeded", "rate_limit_exceeded"),
    (SandboxClosed, 404, "invalid_request_error", None),
    (NotFound, 404, "invalid_request_error", None),
    (Expired, 400, "invalid_request_error", "container_expired"),
    (SandboxUnavailable, 503, "server_error", None),
    (SandboxFailure, 503, "server_error", None),  # raised before any code ran: a retry is safe
    (StoreUnavailable, 503, "server_error", None),
    (UpstreamRejected, 400, "invalid_request_error", "upstream_error"),
    (UpstreamUnavailable, 502, "server_error", "upstream_error"),
]


def envelope(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def describe(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, envelope and headers for any exception (used by the handlers and inside streams)."""
    if isinstance(exc, CellboxError):
        for cls, status, type_, code in MAPPING:
            if isinstance(exc, cls):
                headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
                return status, envelope(str(exc), type_, exc.param, code), headers
    log.exception("unexpected error", exc_info=exc)
    return 500, envelope("The server had an error processing your request.", "server_error"), None


def error_response(exc: Exception) -> JSONResponse:
    status, body, headers = describe(exc)
    return JSONResponse(body, status, headers=headers)


def _param(loc: tuple[Any, ...], body: Any = None) -> str | None:
    """The field's path in the request. Pydantic's labels for the branches of a union (``list[...]``, ``str``, a
    tagged union's tag such as ``function`` in ``tools.0.function.name``) are left out: a label is a step the
    body does not have, between two it does."""
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it was, not a step in it
        loc = loc[1:]
    steps = [p for p in loc if p != "str" and "[" not in str(p)]
    parts, current = [], body
    for n, step in enumerate(steps):
        following = steps[n + 1] if n + 1 < len(steps) else None
        if isinstance(current, dict) and step not in current and following is not None and following in current:
            continue
        parts.append(str(step))
        if isinstance(current, dict):
            current = current.get(step)
        elif isinstance(current, list) and isinstance(step, int) and 0 <= step < len(current):
            current = current[step]
        else:
            current = None
    return ".".join(parts) or None


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    # For a union, pydantic reports every branch; the deepest error is the one that says what is wrong.
    errors = sorted(exc.errors(), key=lambda e: len(e.get("loc", ())), reverse=True)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _param(tuple(first.get("loc", ())), exc.body)
    message = f"Invalid value for '{param}': {first['msg']}" if param else f"Invalid request: {first['msg']}"
    return JSONResponse(envelope(message, "invalid_request_error", param), 400)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    messages = {404: f"Unknown path: {request.method} {request.url.path}", 405: "Method not allowed."}
    message = messages.get(exc.status_code, str(exc.detail))
    return JSONResponse(envelope(message, "invalid_request_error"), exc.status_code, headers=exc.headers)


async def _cellbox(request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(CellboxError, _cellbox)  # expected: answered, not logged as a crash
    app.add_exception_handler(Exception, _cellbox)  # unexpected: answered with a 500 and logged
