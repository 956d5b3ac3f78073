"""Every domain error has one HTTP answer: the status below and OpenAI's envelope, driven through a real app."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from cellbox import errors as domain
from cellbox.api import errors
from tests import openapi

EXPECTED = {
    "TooLarge": (413, "file_too_large"),
    "InvalidInput": (400, None),
    "Unauthenticated": (401, "invalid_api_key"),
    "Forbidden": (403, "host_not_allowed"),
    "RateLimited": (429, "rate_limit_exceeded"),
    "NotFound": (404, None),
    "SandboxClosed": (404, None),
    "Expired": (400, "container_expired"),
    "SandboxUnavailable": (503, None),
    "SandboxFailure": (503, None),
    "StoreUnavailable": (503, None),
    "UpstreamRejected": (400, "upstream_error"),
    "UpstreamUnavailable": (502, "upstream_error"),
}


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _instance(cls: type[domain.CellboxError]) -> domain.CellboxError:
    if cls is domain.RateLimited:
        return domain.RateLimited("slow down", retry_after=7)
    return cls("what went wrong", "field")


def test_every_domain_error_has_an_expected_answer() -> None:
    assert {cls.__name__ for cls in _subclasses(domain.CellboxError)} == set(EXPECTED)
    assert {cls.__name__ for cls, *_ in errors.MAPPING} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_each_error_through_an_app(name: str) -> None:
    app = FastAPI()
    errors.install(app)
    exc = _instance(getattr(domain, name))

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        response = await client.get("/boom")
    status, code = EXPECTED[name]
    assert response.status_code == status
    body = response.json()
    openapi.validate_error(body)
    assert body["error"]["message"] == str(exc)
    assert body["error"]["code"] == code
    assert body["error"]["param"] == exc.param
    if name == "RateLimited":
        assert response.headers["retry-after"] == "7"


async def test_an_unexpected_error_is_a_bare_500_without_details() -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("secret detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "The server had an error processing your request.",
                                         "type": "server_error", "param": None, "code": None}}
