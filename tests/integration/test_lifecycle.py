"""Containers leave nothing behind: processes, descriptors, cgroups and mounts return to where they started."""

from __future__ import annotations

import asyncio
import gc
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cellbox.config import Settings
from cellbox.errors import SandboxUnavailable
from cellbox.sandbox.engine import Engine


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def mounts_under(directory: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(directory))]


def cgroup_children(engine: Engine) -> set[str]:
    bases = engine._cgroups.bases.values()
    return {entry.name for base in bases for entry in base.iterdir() if entry.is_dir()}


async def settle(predicate, attempts: int = 100) -> bool:
    for _ in range(attempts):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_create_and_destroy_many_containers_leaks_nothing(engine: Engine) -> None:
    await engine.warmed()
    gc.collect()  # sockets left by earlier tests' clients would close mid-test and hide a leak
    zygote = engine._zygote.pid
    assert zygote is not None
    baseline_fds, baseline_children = open_fds(), children(zygote)
    baseline_cgroups, baseline_mounts = cgroup_children(engine), mounts_under(engine.workspaces_dir)
    for _ in range(3):
        boxes = await asyncio.gather(*(engine.create() for _ in range(8)))
        await asyncio.gather(*(b.run("import subprocess; subprocess.Popen(['sleep', '300']); 1") for b in boxes))
        await asyncio.gather(*(engine.destroy(b.id) for b in boxes))
    # The warm pool refills with new processes and groups, so compare how many, not which.
    await engine.warmed()
    assert await settle(lambda: len(children(zygote)) == len(baseline_children))
    assert await settle(lambda: len(cgroup_children(engine)) == len(baseline_cgroups))
    gc.collect()
    assert open_fds() <= baseline_fds
    assert await settle(lambda: len(mounts_under(engine.workspaces_dir)) == len(baseline_mounts))


async def test_closing_the_engine_removes_its_cgroups_and_volumes(tmp_path: Path) -> None:
    async with Engine(Settings(data_dir=tmp_path, preload=[])) as engine:
        await engine.create()
        bases = list(engine._cgroups.bases.values())
        assert all(base.exists() for base in bases)
    assert not any(base.exists() for base in bases)
    assert mounts_under(tmp_path) == []


async def test_cgroups_left_by_a_dead_engine_are_reaped(tmp_path: Path) -> None:
    async with Engine(Settings(data_dir=tmp_path / "a", preload=[])) as engine:
        parent = next(iter(engine._cgroups.bases.values())).parent
    stale = parent / "cellbox-999999999-abcdef"  # a pid that cannot exist
    (stale / "cntr_x").mkdir(parents=True)
    async with Engine(Settings(data_dir=tmp_path / "b", preload=[])):
        assert not stale.exists()


async def test_a_killed_template_is_replaced_and_running_containers_keep_working(engine: Engine) -> None:
    survivor = await engine.create()
    await survivor.run("kept = 'yes'")
    old = engine._zygote.pid
    assert old is not None
    os.kill(old, 9)
    # A refill under way may notice first and start the replacement itself.
    assert await settle(lambda: not engine._zygote.running or engine._zygote.pid != old)
    fresh = await engine.create()
    assert (await fresh.run("1 + 1")).outputs[-1].data["text/plain"] == "2"
    kept = await survivor.run("kept")
    assert not kept.restarted
    assert kept.outputs[-1].data["text/plain"] == "'yes'"
    assert engine._zygote.pid != old
    await engine.destroy(fresh.id)
    await engine.destroy(survivor.id)


async def test_refuses_to_start_without_root_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxUnavailable, match="must start as root"):
        await Engine(Settings(data_dir=tmp_path)).start()


async def test_refuses_a_uid_range_a_host_user_has(tmp_path: Path) -> None:
    """That user would share the containers' per-user limits, could signal them and own their files."""
    user = next(user for user in pwd.getpwall() if user.pw_uid > 0)
    settings = Settings(data_dir=tmp_path / "data", sandbox_uid=user.pw_uid, sandbox_id_count=16)
    engine = Engine(settings)
    try:
        with pytest.raises(SandboxUnavailable, match=f"it holds user {user.pw_name} \\(uid {user.pw_uid}\\)"):
            await engine.start()
        assert not (tmp_path / "data").exists()  # refused before anything was made
    finally:
        await engine.aclose()  # had it started, its volumes would stay mounted under tmp_path


async def test_uids_are_one_per_live_container_and_come_back_when_containers_go(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, preload=[], warm_pool=0, sandbox_id_count=2)
    async with Engine(settings) as engine:
        first, second = await engine.create(), await engine.create()
        assert {first.uid, second.uid} == {settings.sandbox_uid, settings.sandbox_uid + 1}
        with pytest.raises(SandboxUnavailable, match="all 2 sandbox uids are in use"):
            await engine.create()
        await engine.destroy(first.id)
        third = await engine.create()
        assert third.uid == first.uid  # reclaimed
        await engine.stop(second.id)  # stopped, not destroyed: its uid comes back too
        fourth = await engine.create()
        assert fourth.uid == second.uid


def test_containers_die_with_the_server_however_it_dies(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves no container running (the lifeline pipe reads EOF)."""
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from cellbox.config import Settings\n"
        "from cellbox.sandbox.engine import Engine\n"
        "async def main():\n"
        "    engine = Engine(Settings(data_dir=Path(sys.argv[1]), preload=[]))\n"
        "    await engine.start()\n"
        "    box = await engine.create()\n"
        "    asyncio.ensure_future(box.run('while True: pass'))\n"
        "    await asyncio.sleep(0.5)\n"
        "    print(box.init_pid, flush=True)\n"
        "    await asyncio.sleep(300)\n"
        "asyncio.run(main())\n"
    )
    with subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True) as server:
        try:
            init_pid = int(server.stdout.readline())
            os.kill(init_pid, 0)  # the container is running
        finally:
            server.kill()
    try:
        for _ in range(100):
            try:
                os.kill(init_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the container outlived its server")
    finally:  # a killed server leaves its volumes mounted (the next start reclaims them); unmount for tmp_path
        for mount_point in mounts_under(tmp_path):
            subprocess.run(["umount", "-l", mount_point], check=False)


async def test_warm_containers_are_fresh_and_take_the_requested_limits(engine: Engine) -> None:
    assert await settle(lambda: len(engine._warm) == engine.settings.warm_pool)
    first = await engine.create()
    await first.run("secret = 1; open('mine.txt', 'w').write('x')")
    warm = {box.id for box in engine._warm}
    second = await engine.create(memory="256m", timeout=20)
    assert second.id in warm  # handed out from the pool
    fresh = await second.run("import os; print(os.listdir('.')); 'secret' in globals()")
    assert fresh.stdout == "[]\n"
    assert fresh.outputs[-1].data["text/plain"] == "False"
    bomb = await second.run("x = bytearray(600 << 20)")  # over 256m, well under the pool's default 1g
    assert bomb.status == "out_of_memory"
    assert second.limits.timeout == 20
    for box in (first, second):
        await engine.destroy(box.id)
