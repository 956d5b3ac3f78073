"""Unit-tier fixtures: a fresh SQLite catalog per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.store.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'cellbox.db'}")
    await database.migrate()
    yield database
    await database.aclose()
