"""Containers API through the official SDK (sync and async)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.api.server import Server, async_client, check_error


def test_create_retrieve_list_delete(sdk: openai.OpenAI) -> None:
    created = sdk.containers.create(name="My Container", memory_limit="4g",
                                    expires_after={"anchor": "last_active_at", "minutes": 30})
    assert created.id.startswith("cntr_")
    assert (created.name, created.status, created.memory_limit) == ("My Container", "running", "4g")
    assert created.expires_after.minutes == 30
    fetched = sdk.containers.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.last_active_at >= created.last_active_at
    assert created.id in [c.id for c in sdk.containers.list(name="My Container")]
    assert created.id not in [c.id for c in sdk.containers.list(name="other name")]
    assert sdk.containers.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.containers.retrieve(created.id)


def test_defaults_follow_openai(sdk: openai.OpenAI) -> None:
    created = sdk.containers.create(name="defaults")
    assert created.memory_limit == "1g"
    assert created.expires_after.anchor == "last_active_at"
    assert created.expires_after.minutes == 20
    assert created.network_policy.type == "disabled"
    sdk.containers.delete(created.id)


def test_file_ids_are_copied_into_the_workspace(sdk: openai.OpenAI, http: httpx.Client) -> None:
    upload = sdk.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    created = sdk.containers.create(name="with files", file_ids=[upload.id])
    files = list(sdk.containers.files.list(created.id))
    assert [(f.path, f.source, f.bytes) for f in files] == [("/mnt/data/data.csv", "user", 8)]
    run = http.post(f"/v1/containers/{created.id}/execute", json={"code": "print(open('data.csv').read())"})
    assert run.json()["outputs"][0]["logs"] == "a,b\n1,2\n\n"
    sdk.containers.delete(created.id)


def test_pagination(sdk: openai.OpenAI) -> None:
    ids = [sdk.containers.create(name="paged").id for _ in range(3)]
    page = sdk.containers.list(name="paged", limit=1, order="asc")
    assert [c.id for c in page] == ids
    assert len(list(page.iter_pages())) == 3
    for cid in ids:
        sdk.containers.delete(cid)


async def test_async_client(server: Server) -> None:
    async with async_client(server) as sdk:
        created = await sdk.containers.create(name="async")
        assert (await sdk.containers.retrieve(created.id)).name == "async"
        assert created.id in [c.id async for c in sdk.containers.list(name="async")]
        await sdk.containers.delete(created.id)


def test_containers_of_another_project_are_invisible(sdk: openai.OpenAI, other: openai.OpenAI,
                                                     container: str) -> None:
    for call in (lambda: other.containers.retrieve(container), lambda: other.containers.delete(container),
                 lambda: list(other.containers.files.list(container))):
        with pytest.raises(openai.NotFoundError):
            call()
    assert container not in [c.id for c in other.containers.list()]
    sdk.containers.retrieve(container)  # still there for its owner


def test_bad_input(http: httpx.Client) -> None:
    check_error(http.post("/v1/containers", content=b"{not json", headers={"content-type": "application/json"}),
                400)
    check_error(http.post("/v1/containers", json={}), 400, "name")
    check_error(http.post("/v1/containers", json={"name": 5}), 400, "name")
    check_error(http.post("/v1/containers", json={"name": "x", "memory_limit": "2g"}), 400, "memory_limit")
    check_error(http.post("/v1/containers", json={"name": "x", "expires_after": {"anchor": "created_at",
                                                                                  "minutes": 5}}), 400, "anchor")
    error = check_error(http.post("/v1/containers", json={"name": "x", "network_policy": {
        "type": "allowlist", "allowed_domains": ["example.com"]}}), 400, "network access is turned off")
    assert error["param"] == "network_policy"
    check_error(http.post("/v1/containers", json={"name": "x", "file_ids": ["file-missing"]}), 404, "no such file")
    check_error(http.get("/v1/containers/cntr_missing"), 404, "not found")
    check_error(http.get("/v1/containers", params={"limit": 101}), 400, "limit")
    check_error(http.get("/v1/containers", params={"order": "sideways"}), 400, "order")
    check_error(http.get("/v1/nowhere"), 404, "unknown path")


def test_a_failed_create_leaves_nothing_behind(sdk: openai.OpenAI, http: httpx.Client) -> None:
    before = [c.id for c in sdk.containers.list()]
    check_error(http.post("/v1/containers", json={"name": "half", "file_ids": ["file-missing"]}), 404)
    assert [c.id for c in sdk.containers.list()] == before
