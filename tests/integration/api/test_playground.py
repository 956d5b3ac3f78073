"""The playground is served at / with a policy that lets only its own files run; its assets come from Cellbox
itself; file contents come with headers that keep a browser from running them as pages of this origin."""

from __future__ import annotations

import re

import httpx
import openai

from tests.integration.api.server import Server


def test_the_page_and_its_assets_come_from_the_server_under_a_strict_policy(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "img-src 'self' data: blob:" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert "/playground/app.js" in assets
    for asset in [*assets, "/playground/chat.js", "/playground/vendor/purify.es.mjs"]:
        got = httpx.get(server.url + asset)
        assert got.status_code == 200, asset
    assert httpx.head(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/playground/nothing.js").status_code == 404
    assert httpx.get(server.url + "/playground/../pyproject.toml").status_code == 404


def test_file_contents_never_run_as_pages_of_this_origin(server: Server, sdk: openai.OpenAI, container: str,
                                                         http: httpx.Client) -> None:
    sdk.containers.files.create(container, file=("page.html", b"<script>alert(1)</script>"))
    (listed,) = sdk.containers.files.list(container)
    got = http.get(f"/v1/containers/{container}/files/{listed.id}/content")
    assert got.headers["content-security-policy"] == "sandbox"
    assert got.headers["x-content-type-options"] == "nosniff"
    stored = sdk.files.create(file=("page.html", b"<script>alert(1)</script>"), purpose="user_data")
    got = http.get(f"/v1/files/{stored.id}/content")
    assert got.headers["content-security-policy"] == "sandbox"
    assert got.headers["x-content-type-options"] == "nosniff"
