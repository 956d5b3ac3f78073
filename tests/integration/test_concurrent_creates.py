"""Creation under concurrency: spawns overlap in the template, a slow one holds up no other, the warm pool's
refill yields to creates that are waiting, and a template lost with spawns in flight fails none of them.

A spawn is made slow on purpose by pointing its container's cgroup file at a FIFO nobody reads: its monitor
blocks opening it until the test opens the other end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cellbox.config import Settings
from cellbox.sandbox import engine as engine_module
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.launcher import Zygote

GUARD = 120.0  # seconds: only a hang (the defect) comes near this on a slow, busy machine


class Stall:
    """Makes the next spawn's monitor block on a FIFO until :meth:`release`."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fifo = directory / "stall"
        os.mkfifo(self.fifo)
        self.armed = False
        self.spawns: list[str] = []  # "stalled" or "plain", in the order the template was asked
        original = Zygote.spawn

        async def spawn(zygote: Zygote, spec: dict[str, Any]) -> Any:
            if self.armed:
                self.armed = False
                self.spawns.append("stalled")
                spec = {**spec, "cgroup_procs": [str(self.fifo)]}
            else:
                self.spawns.append("plain")
            return await original(zygote, spec)

        monkeypatch.setattr(Zygote, "spawn", spawn)

    async def release(self) -> None:
        def drain() -> None:
            with open(self.fifo) as f:  # opens once the blocked monitor has it open for writing
                f.read()

        await asyncio.to_thread(drain)


def template_children(engine: Engine) -> list[int]:
    pid = engine._zygote.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


async def stalled_monitor_started(engine: Engine, before: int) -> None:
    """Until the template has forked the stalled spawn's monitor (it then blocks on the FIFO)."""
    async with asyncio.timeout(GUARD):
        while len(template_children(engine)) <= before:  # noqa: ASYNC110 - a process appearing is not an Event
            await asyncio.sleep(0.01)


@pytest.fixture
async def cold_engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with Engine(Settings(data_dir=tmp_path / "data", preload=[], warm_pool=0)) as started:
        yield started


async def test_a_slow_spawn_holds_up_no_other_create(cold_engine: Engine, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    stall = Stall(tmp_path, monkeypatch)
    stall.armed = True
    slow = asyncio.create_task(cold_engine.create())
    await stalled_monitor_started(cold_engine, 0)
    quick = await asyncio.wait_for(cold_engine.create(), GUARD)  # a serialised template never answers this
    assert (await quick.run("6 * 7")).outputs[-1].data["text/plain"] == "42"
    assert not slow.done()
    await stall.release()
    stalled = await asyncio.wait_for(slow, GUARD)
    assert (await stalled.run("1 + 1")).outputs[-1].data["text/plain"] == "2"
    assert stall.spawns == ["stalled", "plain"]
    for box in (quick, stalled):
        await cold_engine.destroy(box.id)


async def test_the_warm_pool_refills_only_after_waiting_creates(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A refill during a burst takes template time from requests already waiting and helps none of them."""
    monkeypatch.setattr(engine_module, "REFILL_DELAY", 0.0)
    async with Engine(Settings(data_dir=tmp_path / "data", preload=[], warm_pool=1)) as engine:
        await engine.warmed()
        stall = Stall(tmp_path, monkeypatch)
        warm = await engine.create()  # from the pool, which now wants one more
        before = len(template_children(engine))
        stall.armed = True
        waiting = asyncio.create_task(engine.create(sandbox_id="cntr_waiting"))  # on the request path
        await stalled_monitor_started(engine, before)
        # Give a refill that did not wait every chance to ask the template meanwhile.
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert stall.spawns == ["stalled"]
        await stall.release()
        waited = await asyncio.wait_for(waiting, GUARD)
        await asyncio.wait_for(engine.warmed(), GUARD)
        assert stall.spawns == ["stalled", "plain"]
        assert len(engine._warm) == 1
        for box in (warm, waited):
            await engine.destroy(box.id)


async def test_spawns_in_flight_when_the_template_dies_are_retried_on_a_new_one(
        cold_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stall = Stall(tmp_path, monkeypatch)
    stall.armed = True
    old = cold_engine._zygote.pid
    pending = asyncio.create_task(cold_engine.create())
    await stalled_monitor_started(cold_engine, 0)
    os.kill(old, 9)
    box = await asyncio.wait_for(pending, GUARD)
    assert cold_engine._zygote.pid != old
    assert stall.spawns == ["stalled", "plain"]  # the stalled monitor is abandoned; its retry is plain
    assert (await box.run("'alive'")).outputs[-1].data["text/plain"] == "'alive'"
    await cold_engine.destroy(box.id)
    await stall.release()  # the abandoned monitor writes, finds its template gone, and exits


async def test_the_warm_pool_reports_how_full_it_is(tmp_path: Path) -> None:
    async with Engine(Settings(data_dir=tmp_path / "data", preload=[], warm_pool=2)) as engine:
        await engine.warmed()
        assert engine.warm_pool() == {"ready": 2, "size": 2}
        box = await engine.create()
        assert engine.warm_pool() == {"ready": 1, "size": 2}  # handed out; the refill has not run yet
        await engine.warmed()
        assert engine.warm_pool() == {"ready": 2, "size": 2}
        await engine.destroy(box.id)
