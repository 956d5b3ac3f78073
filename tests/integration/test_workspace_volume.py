"""Each workspace is a filesystem of its own: the disk quota is real (ENOSPC), and it goes away with its container."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.errors import InvalidInput
from cellbox.ids import container_id
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
    assert os.stat(box.workspace.root).st_uid == box.uid  # on the host: the container's own uid


def _owners(root: Path) -> set[int]:
    return {os.lstat(p).st_uid for p in [root, *root.rglob("*")]}


async def test_a_restored_workspace_keeps_its_uid_when_free_and_changes_owner_when_not(small_engine: Engine,
                                                                                      tmp_path: Path) -> None:
    host_file = tmp_path / "host.txt"
    host_file.write_text("the host's")
    box = await small_engine.create()
    box.upload("kept.txt", b"kept")
    assert (await box.run(f"import os\nos.makedirs('sub/deeper')\nopen('sub/deeper/made.txt', 'w').write('m')\n"
                          f"os.symlink({str(host_file)!r}, 'escape')\nos.symlink('/mnt/data/sub', 'sub/loop')")).ok
    root, first = box.workspace.root, box.uid
    await small_engine.warmed()  # no refill under way to take the uid given back below
    await small_engine.stop(box.id)
    again = await small_engine.create(sandbox_id=box.id, workspace=root)
    assert again.uid == first  # in range and free: kept, nothing to change
    await small_engine.stop(box.id)
    squatter = await small_engine.create(sandbox_id=container_id())  # not from the pool: the lowest free uid
    assert squatter.uid == first
    moved = await small_engine.create(sandbox_id=box.id, workspace=root)
    assert moved.uid not in (first, squatter.uid)
    assert _owners(root) == {moved.uid}
    assert os.lstat(host_file).st_uid == 0  # the planted symlink was not followed
    result = await moved.run("open('kept.txt', 'a').write('!')\nopen('sub/deeper/made.txt', 'a').write('!')\n"
                             "open('sub/deeper/new.txt', 'w').write('n')\nprint(open('kept.txt').read())")
    assert result.ok, result.error
    assert result.stdout == "kept!\n"
    assert moved.upload("sub/up.txt", b"u").path == "/mnt/data/sub/up.txt"
    assert os.lstat(root / "sub" / "up.txt").st_uid == moved.uid


async def test_after_a_restart_each_workspace_gets_its_uid_back_before_warm_containers_can(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, disk_quota="16m", preload=[])
    async with Engine(settings) as engine:
        boxes = [await engine.create() for _ in range(3)]
        for box in boxes:
            box.upload("mine.txt", box.id.encode())
        kept = {box.id: (box.workspace.root, box.uid) for box in boxes}
        await engine.aclose(keep_workspaces=True)
    async with Engine(settings) as engine:
        await engine.warmed()  # the warm pool started first, and left the kept workspaces' uids alone
        warm = {box.uid for box in engine._warm}
        assert len(warm) == settings.warm_pool
        for sandbox_id, (root, uid) in kept.items():
            box = await engine.create(sandbox_id=sandbox_id, workspace=root)
            assert box.uid == uid
            assert uid not in warm
            assert (await box.run("print(open('mine.txt').read())")).stdout == f"{sandbox_id}\n"
