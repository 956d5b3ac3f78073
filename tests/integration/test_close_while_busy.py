"""Closing a container while its code runs: the execution ends without bringing the container back, and nothing
is left behind (processes, cgroups)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cellbox.config import Settings
from cellbox.errors import SandboxClosed
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.events import Finished, Stream


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def test_destroying_a_busy_container_ends_its_execution_and_restarts_nothing(engine: Engine) -> None:
    await engine.warmed()
    zygote = engine._zygote.pid
    box = await engine.create()
    init = box.init_pid
    events = box.execute("import subprocess, time\nsubprocess.Popen(['sleep', '300'])\nprint('busy', flush=True)\n"
                         "time.sleep(300)", timeout=600)
    first = await anext(events)
    assert isinstance(first, Stream)
    assert first.text == "busy\n"
    rest = asyncio.ensure_future(_drain(events))
    await engine.destroy(box.id)
    finished = await asyncio.wait_for(rest, 120)
    assert finished.status == "crashed"
    assert finished.restarted is False
    assert finished.message == "The container was deleted or expired while the code ran."
    assert box.state == "closed"
    assert _zombie(init)  # gone, or reaped at once
    assert init not in _children(zygote)
    try:
        await box.run("1")
    except SandboxClosed:
        pass
    else:
        raise AssertionError("a closed container ran code")
    assert box.restarts == 0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def _drain(events) -> Finished:
    async for event in events:
        if isinstance(event, Finished):
            return event
    raise AssertionError("no Finished event")


async def test_many_busy_containers_destroyed_at_once_leave_no_process(engine: Engine) -> None:
    await engine.warmed()
    zygote = engine._zygote.pid
    baseline = len(_children(zygote))
    boxes = await asyncio.gather(*(engine.create() for _ in range(6)))
    streams = [b.execute("print('up', flush=True)\nimport time\ntime.sleep(300)", timeout=600) for b in boxes]
    for stream in streams:
        assert (await anext(stream)).text == "up\n"
    drains = [asyncio.ensure_future(_drain(s)) for s in streams]
    await asyncio.gather(*(engine.destroy(b.id) for b in boxes))
    results = await asyncio.wait_for(asyncio.gather(*drains), 120)
    assert {r.status for r in results} == {"crashed"}
    assert all(b.restarts == 0 for b in boxes)
    await engine.warmed()
    for _ in range(200):  # monitors exit once their init is reaped: wait for the count to come back
        if len(_children(zygote)) == baseline:
            break
        await asyncio.sleep(0.05)
    assert len(_children(zygote)) == baseline


def _templates() -> list[int]:
    """Live forkservers started by this test process."""
    found = []
    for pid in _children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"cellbox.sandbox.zygote" in f.read() and not _zombie(pid):
                    found.append(pid)
        except FileNotFoundError:
            continue
    return found


async def test_concurrent_spawns_after_the_template_died_start_exactly_one(tmp_path: Path) -> None:
    """On an engine of its own: the session engine's leak test counts the children of its template."""
    async with Engine(Settings(data_dir=tmp_path, warm_pool=1, preload=[], timeout=60)) as engine:
        await _spawn_race(engine)


async def _spawn_race(engine: Engine) -> None:
    await engine.warmed()
    before = _templates()
    old = engine._zygote.pid
    assert old in before
    os.kill(old, 9)
    for _ in range(200):  # wait until the kernel says it is gone
        if _zombie(old):
            break
        await asyncio.sleep(0.05)
    boxes = await asyncio.gather(*(engine.create(sandbox_id=f"cntr_race{i}") for i in range(6)))
    await engine.warmed()
    after = _templates()
    assert len(after) == len(before)
    assert old not in after
    await asyncio.gather(*(engine.destroy(b.id) for b in boxes))


async def test_one_id_is_started_once_however_many_ask(engine: Engine) -> None:
    results = await asyncio.gather(*(engine.create(sandbox_id="cntr_once") for _ in range(3)),
                                   return_exceptions=True)
    started = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 1
    assert [str(r) for r in refused] == ["container cntr_once already exists"] * 2
    await engine.destroy("cntr_once")
