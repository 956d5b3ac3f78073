"""Each workspace is a filesystem of its own: the disk quota is real (ENOSPC), and it goes away with its container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.errors import InvalidInput
from cellbox.sandbox.engine import Engine


@pytest.fixture
async def small_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(Settings(data_dir=tmp_path, disk_quota="16m", preload=[])) as engine:
        yield engine


async def test_filling_the_workspace_fails_with_enospc_and_the_session_survives(small_engine: Engine) -> None:
    box = await small_engine.create()
    result = await box.run(
        "import errno\nchunk = b'x' * (1 << 20)\n"
        "try:\n    with open('fill.bin', 'wb') as f:\n        for _ in range(64): f.write(chunk); f.flush()\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])"
    )
    assert result.stdout.strip() in {"ENOSPC", "EFBIG"}
    assert (await box.run("import os; os.remove('fill.bin'); 'ok'")).ok
    assert (await box.run("import shutil; shutil.disk_usage('/mnt/data').total < 17 * 2**20")).outputs[-1].data[
        "text/plain"] == "True"


async def test_uploads_beyond_the_quota_are_refused(small_engine: Engine) -> None:
    box = await small_engine.create()
    with pytest.raises(InvalidInput, match="workspace is full"):
        box.upload("big.bin", b"x" * (32 << 20))
    assert [f.path for f in box.files()] == []  # no temporary file left behind


async def test_destroy_unmounts_and_deletes_the_volume(small_engine: Engine) -> None:
    box = await small_engine.create()
    box.upload("a.txt", b"a")
    root = box.workspace.root
    with open("/proc/self/mountinfo") as f:
        assert str(root) in f.read()
    await small_engine.destroy(box.id)
    with open("/proc/self/mountinfo") as f:
        assert str(root) not in f.read()
    assert not root.exists()
    assert not root.with_suffix(".img").exists()


async def test_workspaces_are_empty_and_owned_by_the_sandbox_user(small_engine: Engine) -> None:
    box = await small_engine.create()
    result = await box.run("import os; print(os.listdir('.'), os.stat('.').st_uid)")
    assert result.stdout == "[] 1000\n"
