from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.api.server import Server, client, raw
from tests.upstream import ScriptedUpstream


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("api-data"), CELLBOX_MAX_UPLOAD="4m",
                     CELLBOX_UPSTREAM_BASE_URL=upstream.url, CELLBOX_UPSTREAM_API_KEY="upstream-secret").start()
    yield running
    running.stop()


@pytest.fixture
def sdk(server: Server) -> Iterator[openai.OpenAI]:
    with client(server) as c:
        yield c


@pytest.fixture
def other(server: Server) -> Iterator[openai.OpenAI]:
    """A client of another project."""
    with client(server, "key-b") as c:
        yield c


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with raw(server) as c:
        yield c


@pytest.fixture
def container(sdk: openai.OpenAI) -> Iterator[str]:
    created = sdk.containers.create(name="test")
    yield created.id
    with contextlib.suppress(openai.NotFoundError):
        sdk.containers.delete(created.id)


@pytest.fixture
def model(request: pytest.FixtureRequest) -> str:
    """A model name of this test's own, so scripted replies never leak between tests."""
    return f"model-{request.node.name}"
