"""/docs works without internet: every asset it loads is served by Cellbox itself; the schema offers the bearer
key (Swagger's Authorize button) and describes the execute extension's answer."""

from __future__ import annotations

import re

import httpx

from tests.integration.api.server import Server


def test_the_docs_page_loads_nothing_from_elsewhere(server: Server) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert sources
    assert all(source.startswith("/") for source in sources), sources  # same origin: no CDN
    for source in sources:
        asset = httpx.get(server.url + source)
        assert asset.status_code == 200, source
        assert len(asset.content) > 100, source


def test_the_schema_offers_the_bearer_key_and_describes_execute(server: Server) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    execute = schema["paths"]["/v1/containers/{container_id}/execute"]["post"]
    answer = execute["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Execution")
    assert execute["security"]
