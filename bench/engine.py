"""Engine benchmarks, run by hand as root: ``.venv/bin/python bench/engine.py [--quick] [--no-baseline]``.

Everything is measured from a warm engine (the forkserver template already started) with
``time.perf_counter``; latencies are reported as p50 (median), p90, p99 and max in milliseconds.
Memory comes from /proc/<pid>/smaps_rollup (PSS, and USS = Private_Clean + Private_Dirty) for a
container's init and kernel processes, found through ``box.init_pid`` and
/proc/<init>/task/<init>/children. Note that PSS splits pages shared with the template among every
process mapping them, so it depends on how many containers are alive: it is reported at 1, 10 and
``--many`` containers. The host-side monitor process of each container (the parent of its init) is
reported separately, since it is a per-container cost too.

Creation is measured back to back (create, destroy, create, ...) and paced (100 ms idle between
iterations, which lets the engine's spare pools refill and the CPUs go idle). The memory checks see
file-backed pages shared with *any* process mapping the same venv files, so other Cellbox engines or
test runs on the machine change the template's PSS/USS; each phase line says if others were running.

At the end the plain Jupyter-kernel baseline (bench/jupyter_baseline.py) runs in a subprocess, unless
``--no-baseline``, and both are printed side by side. ``--json-out FILE`` saves every number,
``--only ...`` picks benchmarks, ``--many N`` sets the containers-alive-at-once count (0 skips it) and
``--set FIELD=VALUE`` overrides an engine setting (e.g. ``--set sandbox_disk_quota=off``).
Every phase is bounded in count and time; nothing uses the network except a container's own loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from cellbox.sandbox.events import Finished, Result
from cellbox.sandbox.sandbox import Sandbox

MIB = 1 << 20
HERE = Path(__file__).resolve().parent
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
IMPORTS = "import pandas, matplotlib.pyplot"
PACE = 0.1  # seconds between paced creates
TARGETS = {  # name -> (what is compared, limit, unit)
    "create": ("p50", 15.0, "ms"),
    "create_first_print": ("p50", 25.0, "ms"),
    "roundtrip": ("p50", 2.0, "ms"),
    "import_fresh": ("p50", 20.0, "ms"),
    "plot_fresh": ("p50", 150.0, "ms"),
}

# --- numbers ----------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"n": len(ms), "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "max": max(ms) if ms else math.nan, "mean": sum(ms) / len(ms) if ms else math.nan}


class Budget:
    """A wall-clock bound for one phase: loops stop early (and say so) rather than run forever."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def exhausted(self) -> bool:
        return time.perf_counter() > self.deadline


# --- /proc ------------------------------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of one process in bytes (zeros if it is gone)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {"rss": 0, "pss": 0, "uss": 0}
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def container_memory(box: Sandbox) -> dict[str, Any]:
    """init + kernel (the container's processes), the host-side monitor, and the cgroup's own count."""
    init = box.init_pid
    kernels = children(init)
    processes = smaps(init)
    for pid in kernels:
        processes = add(processes, smaps(pid))
    return {"init": smaps(init), "kernel": smaps(kernels[0]) if kernels else {}, "container": processes,
            "monitor": smaps(parent(init)), "cgroup_bytes": box.stats()["memory_bytes"],
            "processes": 1 + len(kernels)}


def zygote_pid(engine: Engine) -> int:
    zygote = engine._zygote  # a benchmark may look inside
    pid = zygote.pid if zygote is not None else None
    if pid is None:
        raise RuntimeError("the engine's template is not running")
    return pid


def spare_volumes(engine: Engine) -> int | None:
    """How many ready workspace volumes the engine holds (None: no volume pool in this version/config)."""
    volumes = getattr(engine, "_volumes", None)
    ready = getattr(volumes, "_ready", None)
    return len(ready) if isinstance(ready, list) else None


def git_state() -> str:
    """Short commit of the checkout, and whether src/ has uncommitted changes (another engineer may be editing)."""
    root = HERE.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in src/' if dirty else ''}"


def cpu_load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def foreign_activity() -> str:
    """Other test runs or Cellbox engines on this machine (not this benchmark's processes): a noise warning."""
    mine = {os.getpid()}
    counts = {"pytest": 0, "other cellbox processes": 0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest" in cmdline:
            counts["pytest"] += 1
        elif "cellbox" in cmdline and pid not in mine:
            ancestor = pid
            for _ in range(8):  # containers are at most kernel -> init -> monitor -> template -> us
                ancestor = parent(ancestor)
                if ancestor in (0, 1) or ancestor in mine:
                    break
            if ancestor not in mine:
                counts["other cellbox processes"] += 1
    busy = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    return f"others running: {busy}" if busy else ""


# --- checks -----------------------------------------------------------------------------------------


def result_text(result: Any) -> str | None:
    return next((o.data.get("text/plain") for o in result.outputs if isinstance(o, Result)), None)


class Failures:
    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def record(self, what: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(what)


# --- benchmarks -------------------------------------------------------------------------------------


async def bench_create_destroy(engine: Engine, n: int, budget: Budget, failures: Failures, pace: float = 0.0,
                               suffix: str = "") -> dict[str, Any]:
    """create → ready, then destroy; ``pace`` seconds of idle between iterations (lets spare pools refill)."""
    created, destroyed = [], []
    pool_empty = 0
    for _ in range(n):
        if budget.exhausted():
            break
        if pace:
            await asyncio.sleep(pace)
        pool_empty += spare_volumes(engine) == 0
        t0 = time.perf_counter()
        box = await engine.create()
        t1 = time.perf_counter()
        if not box.alive:
            failures.record("create: container not alive after create()")
        await engine.destroy(box.id)
        t2 = time.perf_counter()
        created.append(t1 - t0)
        destroyed.append(t2 - t1)
    return {"create" + suffix: summary(created) | {"spare_volume_pool_empty": pool_empty},
            "destroy" + suffix: summary(destroyed)}


async def bench_first_print(engine: Engine, n: int, budget: Budget, failures: Failures) -> dict[str, Any]:
    total, first_run = [], []
    for _ in range(n):
        if budget.exhausted():
            break
        t0 = time.perf_counter()
        box = await engine.create()
        t1 = time.perf_counter()
        result = await box.run("print(1)")
        t2 = time.perf_counter()
        if result.status != "ok" or result.stdout != "1\n":
            failures.record(f"print(1): {result.status} {result.stdout!r}")
        total.append(t2 - t0)
        first_run.append(t2 - t1)
        await engine.destroy(box.id)
    return {"create_first_print": summary(total), "first_print_only": summary(first_run)}


async def bench_roundtrip(engine: Engine, n: int, budget: Budget, failures: Failures) -> dict[str, Any]:
    """``box.run("1+1")`` on one container; then the same through ``execute()``, split at the Result event."""
    box = await engine.create()
    try:
        for _ in range(20):
            await box.run("1+1")
        samples = []
        for _ in range(n):
            if budget.exhausted():
                break
            t0 = time.perf_counter()
            result = await box.run("1+1")
            samples.append(time.perf_counter() - t0)
            if result.status != "ok" or result_text(result) != "2":
                failures.record(f"1+1: {result.status} {result_text(result)!r}")
        to_result, to_finished = [], []
        for _ in range(min(n, 200)):
            t0 = time.perf_counter()
            t_result = math.nan
            async for event in box.execute("1+1"):
                if isinstance(event, Result):
                    t_result = time.perf_counter()
                elif isinstance(event, Finished):
                    to_finished.append(time.perf_counter() - t0)
            to_result.append(t_result - t0)
        return {"roundtrip": summary(samples), "roundtrip_to_result_event": summary(to_result),
                "roundtrip_to_finished_event": summary(to_finished)}
    finally:
        await engine.destroy(box.id)


async def bench_fresh(engine: Engine, name: str, code: str, n: int, budget: Budget, failures: Failures,
                      check: Callable[[Any], bool]) -> dict[str, Any]:
    """``code`` as the first execution in a new container (creation not included)."""
    samples = []
    for _ in range(n):
        if budget.exhausted():
            break
        box = await engine.create()
        try:
            t0 = time.perf_counter()
            result = await box.run(code)
            samples.append(time.perf_counter() - t0)
            if not check(result):
                failures.record(f"{name}: {result.status} {result.outputs[:1]!r}")
        finally:
            await engine.destroy(box.id)
    return {name: summary(samples)}


async def bench_plot_repeat(engine: Engine, n: int, budget: Budget, failures: Failures) -> dict[str, Any]:
    box = await engine.create()
    try:
        await box.run(PLOT)
        samples = []
        for _ in range(n):
            if budget.exhausted():
                break
            t0 = time.perf_counter()
            result = await box.run("plt.plot([1, 2, 3])")
            samples.append(time.perf_counter() - t0)
            if not result.images:
                failures.record("plot repeat: no image")
        return {"plot_repeat": summary(samples)}
    finally:
        await engine.destroy(box.id)


def _median_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in ("init", "kernel", "container", "monitor"):
        out[part] = {k: percentile([s[part].get(k, 0) for s in samples], 50) for k in ("rss", "pss", "uss")}
    out["cgroup_bytes"] = percentile([s["cgroup_bytes"] or 0 for s in samples], 50)
    return out


async def bench_idle_memory(engine: Engine, failures: Failures) -> dict[str, Any]:
    zpid = zygote_pid(engine)
    out: dict[str, Any] = {"zygote_alone": smaps(zpid)}
    boxes = [await engine.create()]
    try:
        await asyncio.sleep(0.3)
        out["one_after_create"] = _median_memory([container_memory(boxes[0])])
        await boxes[0].run("1+1")
        await asyncio.sleep(0.3)
        out["one_after_1+1"] = _median_memory([container_memory(boxes[0])])
        out["zygote_with_one"] = smaps(zpid)
        for _ in range(9):
            boxes.append(await engine.create())
        for box in boxes[1:]:
            result = await box.run("1+1")
            if result_text(result) != "2":
                failures.record("idle memory: 1+1 failed")
        await asyncio.sleep(0.3)
        out["ten_after_1+1"] = _median_memory([container_memory(box) for box in boxes])
        out["zygote_with_ten"] = smaps(zpid)
        # the same ten containers after a realistic first cell: imports (no-ops, preloaded) and a plot
        for box in boxes:
            result = await box.run(IMPORTS + "\n" + PLOT)
            if not result.images:
                failures.record("idle memory: plot failed")
        await asyncio.sleep(0.3)
        out["ten_after_plot"] = _median_memory([container_memory(box) for box in boxes])
    finally:
        for box in boxes:
            await engine.destroy(box.id)
    return out


async def bench_many(engine: Engine, count: int, budget: Budget) -> dict[str, Any]:
    """``count`` containers alive at once, each having run 1+1; then destroy them all."""
    zpid = zygote_pid(engine)
    zygote_before = smaps(zpid)
    available_before = mem_available()
    boxes: list[Sandbox] = []
    create_failures: list[str] = []
    create_times = []
    t_all = time.perf_counter()
    for i in range(count):
        if budget.exhausted():
            create_failures.append(f"time budget exhausted after {i} containers")
            break
        t0 = time.perf_counter()
        try:
            boxes.append(await engine.create())
        except Exception as exc:
            create_failures.append(f"#{i}: {exc!r}")
            if len(create_failures) >= 10:
                break
            continue
        create_times.append(time.perf_counter() - t0)
    create_all_s = time.perf_counter() - t_all
    run_failures: list[str] = []
    run_times = []
    for box in boxes:
        t0 = time.perf_counter()
        try:
            result = await box.run("1+1", timeout=30)
        except Exception as exc:
            run_failures.append(repr(exc))
            continue
        run_times.append(time.perf_counter() - t0)
        if result.status != "ok" or result_text(result) != "2":
            run_failures.append(f"{result.status} {result_text(result)!r}")
    await asyncio.sleep(1.0)
    totals: dict[str, Any] = {"container": {}, "monitor": {}}
    cgroup_total = 0
    alive = 0
    for box in boxes:
        memory = container_memory(box)
        totals["container"] = add(totals["container"], memory["container"])
        totals["monitor"] = add(totals["monitor"], memory["monitor"])
        cgroup_total += memory["cgroup_bytes"] or 0
        alive += box.alive and memory["processes"] >= 2
    zygote_during = smaps(zpid)
    available_during = mem_available()
    destroy_times = []
    t_all = time.perf_counter()
    for box in boxes:
        t0 = time.perf_counter()
        await engine.destroy(box.id)
        destroy_times.append(time.perf_counter() - t0)
    destroy_all_s = time.perf_counter() - t_all
    await asyncio.sleep(0.5)
    leftover = len(children(zpid))
    n = max(len(boxes), 1)
    return {
        "requested": count, "created": len(boxes), "alive_with_kernel": alive,
        "create_failures": create_failures, "run_failures": run_failures[:10],
        "failures": len(create_failures) + len(run_failures) + (len(boxes) - alive),
        "create_all_s": create_all_s, "create": summary(create_times), "roundtrip_1+1": summary(run_times),
        "destroy_all_s": destroy_all_s, "destroy": summary(destroy_times),
        "total": totals, "per_container": {part: {k: v / n for k, v in totals[part].items()} for part in totals},
        "cgroup_total_bytes": cgroup_total, "cgroup_per_container_bytes": cgroup_total / n,
        "zygote_before": zygote_before, "zygote_during": zygote_during,
        "mem_available_drop_bytes": available_before - available_during,
        "mem_available_drop_per_container_bytes": (available_before - available_during) / n,
        "zygote_children_after_destroy": leftover,
    }


# --- driver -----------------------------------------------------------------------------------------


def raise_nofile(wanted: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new_hard = max(hard, wanted) if os.geteuid() == 0 else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def phase(label: str, coro: Awaitable[dict[str, Any]], limit: float) -> dict[str, Any]:
    print(f"  {label} ...", end="", flush=True)
    before = foreign_activity()
    t0 = time.perf_counter()
    try:
        result = await asyncio.wait_for(coro, limit)
    except TimeoutError:
        print(f" TIMED OUT after {limit:g} s", flush=True)
        return {"timed_out": True}
    elapsed, after = time.perf_counter() - t0, foreign_activity()
    noise = f"; at start {before}; at end {after}" if before or after else ""
    print(f" {elapsed:.1f} s (load {cpu_load()}{noise})", flush=True)
    return result


async def run_engine(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    n_create, n_print, n_rt, n_fresh, n_plot = (20, 10, 100, 10, 10) if q else (100, 100, 500, 50, 50)
    many = args.many if args.many is not None else (50 if q else 500)
    failures = Failures()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cellbox-bench-") as tmp:
        t0 = time.perf_counter()
        overrides = dict(item.split("=", 1) for item in args.set or [])
        async with Engine(Settings(data_dir=Path(tmp), **overrides)) as engine:
            results["settings_overrides"] = overrides
            results["engine_start_s"] = time.perf_counter() - t0
            print(f"engine started in {results['engine_start_s']:.2f} s (template preload + self-test)", flush=True)
            for _ in range(5):  # warm-up: page cache, allocator, first cgroup directories
                box = await engine.create()
                await box.run("1+1")
                await engine.destroy(box.id)
            only = set(args.only or [])

            def want(name: str) -> bool:
                return not only or name in only

            if want("create"):
                results |= await phase(f"create→ready + destroy ×{n_create}, back to back",
                                       bench_create_destroy(engine, n_create, Budget(120), failures), 300)
                results |= await phase(f"create→ready + destroy ×{n_create}, {PACE * 1000:.0f} ms apart",
                                       bench_create_destroy(engine, n_create, Budget(150), failures, PACE, "_paced"),
                                       300)
            if want("print"):
                results |= await phase(f"create + first print(1) ×{n_print}",
                                       bench_first_print(engine, n_print, Budget(120), failures), 300)
            if want("roundtrip"):
                results |= await phase(f"1+1 round trip ×{n_rt}",
                                       bench_roundtrip(engine, n_rt, Budget(120), failures), 300)
            if want("import"):
                results |= await phase(f"{IMPORTS} in a fresh container ×{n_fresh}",
                                       bench_fresh(engine, "import_fresh", IMPORTS, n_fresh, Budget(120), failures,
                                                   lambda r: r.status == "ok"), 300)
            if want("plot"):
                results |= await phase(f"small plot in a fresh container ×{n_plot}",
                                       bench_fresh(engine, "plot_fresh", PLOT, n_plot, Budget(120), failures,
                                                   lambda r: r.status == "ok" and bool(r.images)), 300)
                results |= await phase(f"small plot repeated in one container ×{n_plot}",
                                       bench_plot_repeat(engine, n_plot, Budget(120), failures), 300)
            if want("memory"):
                results["memory"] = await phase("idle memory (1 and 10 containers)",
                                                bench_idle_memory(engine, failures), 120)
            if want("many") and many > 0:
                results["many"] = await phase(f"{many} idle containers alive at once",
                                              bench_many(engine, many, Budget(60 + many * 1.0)), 120 + many * 2.0)
        results["failures"] = {"count": failures.count, "examples": failures.examples}
    return results


# --- report -----------------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value / MIB:.1f}"


def print_latencies(results: dict[str, Any], rows: Iterable[tuple[str, str]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'benchmark':<46}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}   target")
    for key, label in rows:
        s = results.get(key)
        if not s or not s.get("n"):
            continue
        target = ""
        if key in TARGETS:
            stat, limit, unit = TARGETS[key]
            met = s[stat] <= limit
            target = f"{stat} ≤ {limit:g} {unit}: {'met' if met else 'MISSED'}"
        print(f"{label:<46}{s['n']:>5}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['max']:>9.2f}   {target}")


def print_memory(results: dict[str, Any]) -> None:
    memory = results.get("memory")
    if not memory or memory.get("timed_out"):
        return
    print("\nmemory per container, MiB (median over containers; container = init + kernel)")
    print(f"{'state':<28}{'PSS':>7}{'USS':>7}{'RSS':>7}  {'kernel PSS/USS':>15}  {'init PSS/USS':>13}"
          f"  {'monitor PSS/USS':>16}  {'cgroup':>7}")
    for key, label in (("one_after_create", "1 alive, just created"), ("one_after_1+1", "1 alive, after 1+1"),
                       ("ten_after_1+1", "10 alive, after 1+1"), ("ten_after_plot", "10 alive, after a plot")):
        m = memory[key]
        c, k, i, mon = m["container"], m["kernel"], m["init"], m["monitor"]
        print(f"{label:<28}{mib(c['pss']):>7}{mib(c['uss']):>7}{mib(c['rss']):>7}  "
              f"{mib(k['pss']) + ' / ' + mib(k['uss']):>15}  {mib(i['pss']) + ' / ' + mib(i['uss']):>13}  "
              f"{mib(mon['pss']) + ' / ' + mib(mon['uss']):>16}  {mib(m['cgroup_bytes']):>7}")
    for key, label in (("zygote_alone", "zygote, no container"), ("zygote_with_one", "zygote, 1 container"),
                       ("zygote_with_ten", "zygote, 10 containers")):
        z = memory[key]
        print(f"{label:<28}{mib(z['pss']):>7}{mib(z['uss']):>7}{mib(z['rss']):>7}")


def print_many(results: dict[str, Any]) -> None:
    many = results.get("many")
    if not many or many.get("timed_out"):
        return
    per, total = many["per_container"], many["total"]
    print(f"\n{many['requested']} idle containers alive at once")
    print(f"  created {many['created']}, alive with a kernel {many['alive_with_kernel']}, "
          f"failures {many['failures']} {many['create_failures'][:3] + many['run_failures'][:3] or ''}")
    print(f"  time to create all: {many['create_all_s']:.2f} s (create p50 {many['create']['p50']:.2f} ms, "
          f"p99 {many['create']['p99']:.2f} ms); 1+1 in each p50 {many['roundtrip_1+1']['p50']:.2f} ms, "
          f"p99 {many['roundtrip_1+1']['p99']:.2f} ms")
    print(f"  containers (init+kernel): total PSS {mib(total['container']['pss'])} MiB, "
          f"USS {mib(total['container']['uss'])} MiB; per container PSS {mib(per['container']['pss'])}, "
          f"USS {mib(per['container']['uss'])} MiB")
    print(f"  monitors: per container PSS {mib(per['monitor']['pss'])}, USS {mib(per['monitor']['uss'])} MiB; "
          f"zygote PSS {mib(many['zygote_during']['pss'])} MiB (alone: {mib(many['zygote_before']['pss'])})")
    print(f"  cgroup memory: total {mib(many['cgroup_total_bytes'])} MiB, per container "
          f"{mib(many['cgroup_per_container_bytes'])} MiB; MemAvailable dropped "
          f"{mib(many['mem_available_drop_bytes'])} MiB = {mib(many['mem_available_drop_per_container_bytes'])} "
          "MiB per container (system-wide, noisy)")
    print(f"  destroy all: {many['destroy_all_s']:.2f} s (p50 {many['destroy']['p50']:.2f} ms, "
          f"p99 {many['destroy']['p99']:.2f} ms); zygote children left: {many['zygote_children_after_destroy']}")


def print_side_by_side(results: dict[str, Any], baseline: dict[str, Any]) -> None:
    def p50(source: dict[str, Any], key: str) -> str:
        s = source.get(key)
        return f"{s['p50']:.2f} ms (p99 {s['p99']:.2f})" if s and s.get("n") else "-"

    memory = results.get("memory", {}).get("ten_after_plot", {}).get("container", {})
    many = results.get("many", {}).get("per_container", {}).get("container", {})
    print("\nCellbox vs a plain Jupyter kernel per container (p50)")
    rows = [
        ("start → ready", p50(results, "create"), p50(baseline, "ready")),
        (f"start → ready, {PACE * 1000:.0f} ms apart", p50(results, "create_paced"), "-"),
        ("start + first print(1)", p50(results, "create_first_print"), p50(baseline, "ready_first_print")),
        ("1+1 round trip (to idle / Finished)", p50(results, "roundtrip"), p50(baseline, "roundtrip_idle")),
        ("import numpy/pandas/pyplot, fresh session", p50(results, "import_fresh"), p50(baseline, "imports")),
        ("small plot → PNG, fresh session", p50(results, "plot_fresh"), p50(baseline, "plot_first")),
        ("USS per session after imports+plot",
         f"{mib(memory.get('uss'))} MiB", f"{mib(baseline.get('memory_after', {}).get('uss'))} MiB"),
        ("PSS per session after imports+plot",
         f"{mib(memory.get('pss'))} MiB (10 alive)",
         f"{mib(baseline.get('memory_after', {}).get('pss'))} MiB ({baseline.get('kernels', '?')} alive)"),
        ("PSS per idle session, many alive", f"{mib(many.get('pss'))} MiB", "-"),
    ]
    print(f"{'':<44}{'Cellbox':<32}{'Jupyter kernel'}")
    for label, ours, theirs in rows:
        print(f"{label:<44}{ours:<32}{theirs}")


def report(results: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    print_latencies(results, [
        ("create", "create → ready (back to back)"),
        ("create_paced", f"create → ready ({PACE * 1000:.0f} ms apart)"),
        ("create_first_print", "create + first print(1)"),
        ("first_print_only", "  of which: first print(1) execution"),
        ("roundtrip", "1+1 round trip (box.run)"),
        ("roundtrip_to_result_event", "  execute(): to the Result event"),
        ("roundtrip_to_finished_event", "  execute(): to the Finished event"),
        ("import_fresh", "import pandas, pyplot (fresh container)"),
        ("plot_fresh", "small plot → PNG (fresh container)"),
        ("plot_repeat", "small plot → PNG (same container, repeat)"),
        ("destroy", "destroy (back to back)"),
        ("destroy_paced", f"destroy ({PACE * 1000:.0f} ms apart)"),
    ], "latency, ms")
    for key in ("create", "create_paced"):
        if results.get(key, {}).get("spare_volume_pool_empty"):
            print(f"  {key}: the spare workspace-volume pool was empty before "
                  f"{results[key]['spare_volume_pool_empty']} of {results[key]['n']} creates")
    print_memory(results)
    print_many(results)
    if baseline:
        print_side_by_side(results, baseline)
    failures = results.get("failures", {})
    print(f"\nfailed checks: {failures.get('count', 0)} {failures.get('examples') or ''}")


def run_baseline(quick: bool) -> dict[str, Any] | None:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(HERE / "jupyter_baseline.py"), "--json-out", out.name]
        if quick:
            command.append("--quick")
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        try:
            subprocess.run(command, check=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"baseline failed: {exc}")
            return None
        data: dict[str, Any] = json.loads(Path(out.name).read_text())
        return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Jupyter-kernel baseline")
    parser.add_argument("--many", type=int, help="containers alive at once (default 500, quick 50; 0 skips)")
    parser.add_argument("--only", nargs="*", choices=["create", "print", "roundtrip", "import", "plot", "memory",
                                                      "many"], help="run only these engine benchmarks")
    parser.add_argument("--json-out", type=Path, help="write every number to this file")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override an engine setting, e.g. --set sandbox_disk_quota=off")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the engine needs root (namespaces and cgroups); run as root")
    many = args.many if args.many is not None else (50 if args.quick else 500)
    nofile = raise_nofile(4 * many + 1024)
    print(f"cellbox engine benchmarks: {platform.node()} {os.cpu_count()} cpus, kernel {platform.release()}, "
          f"python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"RLIMIT_NOFILE {nofile[0]}, load {cpu_load()}", flush=True)
    print(f"commit {git_state()}; command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    results = asyncio.run(run_engine(args))
    results["commit"] = git_state()
    baseline = None if args.no_baseline else run_baseline(args.quick)
    report(results, baseline)
    if args.json_out:
        args.json_out.write_text(json.dumps({"engine": results, "baseline": baseline}, indent=2, default=str))
    if results.get("failures", {}).get("count") or (results.get("many") or {}).get("failures"):
        sys.exit(1)


if __name__ == "__main__":
    main()
