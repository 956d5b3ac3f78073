"""Shared fixtures: one real engine (real forkserver, real namespaces, real cgroups) per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.sandbox import Sandbox
from tests.postgres import Postgres, running_postgres
from tests.s3 import MotoServer
from tests.upstream import ScriptedUpstream


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cellbox-data")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, timeout=30, interrupt_grace=2)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    async with Engine(settings) as started:
        yield started


@pytest.fixture
async def box(engine: Engine) -> AsyncIterator[Sandbox]:
    """A fresh container, destroyed (with its workspace) after the test."""
    sandbox = await engine.create()
    yield sandbox
    if not sandbox.closed:
        await engine.destroy(sandbox.id)


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    """The model server every test's responses talk to; each test scripts replies under its own model name."""
    with ScriptedUpstream() as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the run, started when a test first asks; ``database()`` gives each its own."""
    yield from running_postgres()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A local S3-compatible server; each test makes a bucket of its own."""
    server = MotoServer().start()
    yield server
    server.stop()
