"""Every figure of issue #11 in one run, each beside its baseline from the same run, its ratio and its target.
Run by hand, as root, from the repository root (or `make bench`):

    .venv/bin/python bench/all.py [--quick] [--parts engine http create responses jupyter] [--json-out FILE]

To compare two commits in one sitting, run it alternately with PYTHONPATH naming each checkout's src/ (the
server, the engine and the store come from there; this file and its helpers stay the same).

1. HTTP floor: the trivial ASGI app of bench/api.py under the same uvicorn (uvloop, httptools), driven by the
   same httpx keep-alive client as the API figures. Its POST round trip is measured in the same loop as the API's
   GETs and executes, one request of each kind per iteration, so the machine's drift hits them alike.
2. Engine (bench/engine.py, in this process): `box.run("1+1")`, a small plot in a fresh container, idle memory.
3. API, against a real `cellbox serve` on 127.0.0.1 (bench/api.py) with the tests' scripted model server:
   GET /health, a container, a file, a container file and a stored response; POST execute `1+1`; create and
   first `print(1)` (paced, so the warm pool is full, as on an idle server); 50 clients creating and executing at
   once; and the Responses loop's own costs (bench/responses.py).
4. The Jupyter kernel baseline (bench/jupyter_baseline.py, in a subprocess).

Nothing here leaves loopback. Each target is a ratio, so the figures compare across machines and runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: tests/ holds the stand-in
from tests.upstream import ScriptedUpstream

import cellbox
import responses as loop_bench  # bench/responses.py
from api import burst_with_executions, p99, pool_full, start_server, trivial_server
from cellbox.config import Settings
from cellbox.sandbox.engine import Engine
from engine import (
    PLOT,
    Budget,
    Failures,
    bench_fresh,
    bench_idle_memory,
    bench_roundtrip,
    cpu_load,
    git_state,
    phase,
    run_baseline,
)

MIB = 1 << 20
PARTS = ("engine", "http", "create", "responses", "jupyter")


def ms(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds, from samples in seconds."""
    return {"p50": statistics.median(samples) * 1000, "p99": p99(samples) * 1000, "n": len(samples)}


# --- engine -----------------------------------------------------------------------------------------


async def engine_figures(quick: bool) -> dict[str, Any]:
    failures = Failures()
    with tempfile.TemporaryDirectory(prefix="cellbox-bench-") as tmp:
        async with Engine(Settings(data_dir=Path(tmp))) as engine:
            for _ in range(5):  # warm-up: page cache, allocator, first cgroup directories
                box = await engine.create()
                await box.run("1+1")
                await engine.destroy(box.id)
            out = await phase("engine: 1+1 round trip", bench_roundtrip(engine, 100 if quick else 300, Budget(120),
                                                                       failures), 300)
            out |= await phase("engine: small plot in a fresh container",
                               bench_fresh(engine, "plot_fresh", PLOT, 10 if quick else 30, Budget(120), failures,
                                           lambda r: r.status == "ok" and bool(r.images)), 300)
            out["memory"] = await phase("engine: idle memory", bench_idle_memory(engine, failures), 120)
    out["failures"] = {"count": failures.count, "examples": failures.examples}
    return out


# --- API --------------------------------------------------------------------------------------------


class Objects:
    """One of each thing the GET figures read, made before the clock starts."""

    def __init__(self, http: httpx.AsyncClient, upstream: ScriptedUpstream) -> None:
        self.http = http
        self.upstream = upstream
        self.container = self.file = self.container_file = self.response = ""

    async def make(self) -> None:
        self.container = (await self._ok("POST", "/v1/containers", json={"name": "bench-all"}))["id"]
        self.file = (await self._ok("POST", "/v1/files", files={"file": ("a.txt", b"hello")},
                                    data={"purpose": "user_data"}))["id"]
        ran = await self._ok("POST", f"/v1/containers/{self.container}/execute",
                             json={"code": "open('/mnt/data/a.txt', 'w').write('a')"})
        self.container_file = ran["files"][0]["id"]
        self.upstream.script(loop_bench.TEXT_MODEL, {"text": loop_bench.TEXT})
        self.response = (await self._ok("POST", "/v1/responses", json={
            "model": loop_bench.TEXT_MODEL, "input": "hi",
            "tools": [{"type": "code_interpreter", "container": self.container}]}))["id"]

    async def _ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        reply = await self.http.request(method, path, **kwargs)
        if reply.status_code != 200:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:500]}")
        return dict(reply.json())

    def requests(self, floor: httpx.AsyncClient) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
        http, cid = self.http, self.container
        return {
            "floor": lambda: floor.post("/", json={"code": "1+1"}),
            "health": lambda: http.get("/health"),
            "container": lambda: http.get(f"/v1/containers/{cid}"),
            "file": lambda: http.get(f"/v1/files/{self.file}"),
            "container_file": lambda: http.get(f"/v1/containers/{cid}/files/{self.container_file}"),
            "response": lambda: http.get(f"/v1/responses/{self.response}"),
            "execute": lambda: http.post(f"/v1/containers/{cid}/execute", json={"code": "1+1"}),
        }


async def interleaved(objects: Objects, floor_base: str, rounds: int) -> dict[str, list[float]]:
    """One request of each kind per round, the floor's among them; every answer is checked."""
    async with httpx.AsyncClient(base_url=floor_base, timeout=30) as floor:
        calls = objects.requests(floor)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for round_ in range(rounds + 30):  # 30 uncounted warm-up rounds
            for name, call in calls.items():
                start = time.perf_counter()
                reply = await call()
                elapsed = time.perf_counter() - start
                if reply.status_code != 200:
                    raise RuntimeError(f"{name}: {reply.status_code} {reply.text[:500]}")
                if name == "execute" and reply.json()["outputs"] != [{"type": "logs", "logs": "2\n"}]:
                    raise RuntimeError(f"execute 1+1 gave {reply.text[:500]}")
                if round_ >= 30:
                    samples[name].append(elapsed)
    return samples


async def create_first_print(http: httpx.AsyncClient, count: int) -> dict[str, list[float]]:
    """Paced creates (the warm pool refills between them, as on an idle server), each then running print(1)."""
    creates, totals = [], []
    for _ in range(count):
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        created = await http.post("/v1/containers", json={"name": "first-print"})
        made = time.perf_counter()
        ran = await http.post(f"/v1/containers/{created.json()['id']}/execute", json={"code": "print(1)"})
        done = time.perf_counter()
        if ran.json()["outputs"] != [{"type": "logs", "logs": "1\n"}]:
            raise RuntimeError(f"print(1) gave {ran.text[:500]}")
        creates.append(made - start)
        totals.append(done - start)
        await http.delete(f"/v1/containers/{created.json()['id']}")
    return {"create_paced": creates, "create_first_print": totals}


async def api_figures(base: str, floor_base: str, upstream: ScriptedUpstream, quick: bool,
                      parts: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        objects = Objects(http, upstream)
        await objects.make()
        started = time.perf_counter()
        out["interleaved"] = await interleaved(objects, floor_base, 100 if quick else 400)
        print(f"  API: GETs and executes, interleaved with the floor ... {time.perf_counter() - started:.1f} s "
              f"(load {cpu_load()})", flush=True)
        if "create" not in parts:
            return out
        await pool_full(base)
        out |= await create_first_print(http, 10 if quick else 40)
    clients, runs = (10, 5) if quick else (50, 20)
    sessions = [httpx.AsyncClient(base_url=base, timeout=120) for _ in range(clients)]
    try:
        await asyncio.gather(*(session.get("/health") for session in sessions))  # connected before the clock
        out["burst"] = await burst_with_executions(base, sessions, runs)
    finally:
        await asyncio.gather(*(session.aclose() for session in sessions))
    return out


def responses_figures(base: str, upstream: ScriptedUpstream, quick: bool) -> dict[str, list[float]]:
    """bench/responses.py's interleaved loop, shorter: what the Responses API adds, net of model and code."""
    bench = loop_bench.Bench(base, upstream, stream=False, store=True)
    keys = ("full", "text", "text_raw", "up1", "up2", "execute")
    samples: dict[str, list[float]] = {key: [] for key in keys}
    try:
        bench.capture()
        for iteration in range(10 + (30 if quick else 150)):
            full, text, text_raw = bench.full(), bench.text(), bench.text_raw()
            up1, up2 = bench.upstream_pair()
            execute = bench.execute()
            for model in (loop_bench.TOOL_MODEL, loop_bench.TEXT_MODEL, loop_bench.DIRECT_MODEL):
                upstream.clear(model)
            if iteration >= 10:
                for key, value in zip(keys, (full, text, text_raw, up1, up2, execute), strict=True):
                    samples[key].append(value)
    finally:
        bench.close()
    return samples


def run_api(quick: bool, parts: set[str]) -> dict[str, Any]:
    upstream = ScriptedUpstream().start()
    try:
        with tempfile.TemporaryDirectory(prefix="cellbox-bench-") as data, trivial_server() as floor_base:
            server, base = start_server(data, CELLBOX_UPSTREAM_BASE_URL=upstream.url)
            try:
                out = asyncio.run(api_figures(base, floor_base, upstream, quick, parts))
                if "responses" in parts:
                    started = time.perf_counter()
                    out["responses"] = responses_figures(base, upstream, quick)
                    print(f"  API: the responses loop ... {time.perf_counter() - started:.1f} s", flush=True)
            finally:
                server.terminate()
                server.wait(60)
    finally:
        upstream.stop()
    return out


# --- report -----------------------------------------------------------------------------------------


class Table:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, value: dict[str, float] | None, ratio: float | None = None, against: str = "",
            target: float | None = None, note: str = "") -> None:
        met = None if ratio is None or target is None else ratio <= target
        self.rows.append({"name": name, "value": value, "ratio": ratio, "against": against, "target": target,
                          "met": met, "note": note})

    def print(self) -> None:
        print(f"\n{'figure':<52}{'p50':>10}{'p99':>10}  {'ratio':>7}  {'target':>7}  verdict")
        for row in self.rows:
            value = row["value"] or {}
            p50 = f"{value['p50']:.2f}" if "p50" in value else ""
            tail = f"{value['p99']:.2f}" if "p99" in value else ""
            ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else ""  # 0.018 against 0.02, not 0.02
            target = f"≤{row['target']:g}" if row["target"] is not None else ""
            verdict = {True: "met", False: "NOT met", None: ""}[row["met"]]
            against = f" (× {row['against']})" if row["against"] else ""
            print(f"{row['name']:<52}{p50:>10}{tail:>10}  {ratio:>7}  {target:>7}  {verdict}{against}"
                  f"{'; ' + row['note'] if row['note'] else ''}")


def report(engine: dict[str, Any] | None, api: dict[str, Any], jupyter: dict[str, Any] | None) -> Table:
    table = Table()
    inter = {name: ms(values) for name, values in api["interleaved"].items()}
    floor = inter["floor"]["p50"]
    table.add("HTTP floor: trivial ASGI POST (interleaved)", inter["floor"])
    for name, label, target in (("health", "GET /health", 1.2), ("container", "GET /v1/containers/{id}", 1.5),
                                ("file", "GET /v1/files/{id}", 1.5),
                                ("container_file", "GET /v1/containers/{id}/files/{file_id}", 1.5),
                                ("response", "GET /v1/responses/{id}", 1.5)):
        table.add(label, inter[name], inter[name]["p50"] / floor, "floor", target)
    execute = inter["execute"]
    if engine:
        engine_rt = engine["roundtrip"]
        table.add("engine: 1+1 round trip (box.run, no HTTP)", engine_rt)
        table.add("POST /v1/containers/{id}/execute 1+1", execute, (execute["p50"] - engine_rt["p50"]) / floor,
                  "floor, of what HTTP adds to the engine", 1.5)
    else:
        table.add("POST /v1/containers/{id}/execute 1+1", execute, execute["p50"] / floor, "floor")
    if "responses" in api:
        resp = {key: statistics.median(values) * 1000 for key, values in api["responses"].items()}
        fixed = resp["text"] - resp["up1"]
        turn = resp["full"] - resp["text"] - resp["up2"] - resp["execute"]
        raw = resp["text_raw"] - resp["up1"]
        table.add("responses: fixed cost per response", {"p50": raw}, raw / floor, "floor", 2,
                  "text/raw - up1, from p50s: an httpx POST, as the floor is")
        table.add("responses: the same through the openai SDK", {"p50": fixed}, fixed / floor, "floor", None,
                  "text - up1: adds the SDK's parsing of the Response, on the client")
        table.add("responses: added cost per tool turn", {"p50": turn}, turn / floor, "floor", 2,
                  "full - text - up2 - execute, from p50s")
    if "burst" in api:
        paced, first = ms(api["create_paced"]), ms(api["create_first_print"])
        table.add("create container (HTTP), paced (idle server)", paced)
        burst = api["burst"]
        creates = ms(burst["creates"])
        table.add(f"create under {len(burst['creates'])} clients executing at once", creates,
                  creates["p99"] / paced["p50"], "idle create p50, of the p99", 20,
                  f"errors {burst['errors']}, {burst['executions_while_creates_waited']} executions finished while "
                  f"creates waited, {burst['rate']:.0f} executions/s")
        if jupyter:
            table.add("create + first print(1) over HTTP (paced)", first,
                      first["p50"] / jupyter["ready_first_print"]["p50"], "Jupyter start + first print(1)", 0.02)
        else:
            table.add("create + first print(1) over HTTP (paced)", first)
    if engine:
        memory = engine["memory"]["ten_after_1+1"]
        per_container = (memory["container"]["uss"] + memory["monitor"]["uss"]) / MIB
        plot = engine["plot_fresh"]
        if jupyter:
            table.add("small plot → PNG, fresh container (engine)", plot,
                      plot["p50"] / jupyter["plot_repeat"]["p50"], "a warm Jupyter kernel's plot", 0.5,
                      f"{plot['p50'] / jupyter['plot_first']['p50']:.2f} × its first plot")
            table.add("idle memory per container, USS MiB (10 alive)", {"p50": per_container},
                      per_container / (jupyter["memory_idle"]["uss"] / MIB), "a Jupyter kernel's USS", 0.05,
                      "init + kernel + host-side monitor")
        else:
            table.add("small plot → PNG, fresh container (engine)", plot)
            table.add("idle memory per container, USS MiB (10 alive)", {"p50": per_container})
    if jupyter:
        table.add("Jupyter: 1+1 round trip (to iopub idle)", jupyter["roundtrip_idle"])
        table.add("Jupyter: start + first print(1)", jupyter["ready_first_print"])
        table.add("Jupyter: small plot, first", jupyter["plot_first"])
        table.add("Jupyter: small plot, warm (repeated)", jupyter["plot_repeat"])
        table.add("Jupyter: idle kernel USS MiB", {"p50": jupyter["memory_idle"]["uss"] / MIB})
    return table


def served() -> str:
    """Which checkout's cellbox this run measures (PYTHONPATH may name another than the bench's), at which commit."""
    root = Path(cellbox.__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                           text=True, timeout=10).stdout.strip()
    return f"{root} at {commit or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="what to run (default: all); `http` (floor, GETs, execute) always runs")
    parser.add_argument("--json-out", type=Path, help="write every number to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the engine needs root (namespaces and cgroups); run as root")
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    print(f"cellbox, every figure of issue #11: {os.cpu_count()} cpus ({model}), kernel {platform.release()}, "
          f"python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {cpu_load()}, "
          f"bench at {git_state()}; cellbox from {served()}", flush=True)
    parts = set(args.parts)
    engine = asyncio.run(engine_figures(args.quick)) if "engine" in parts else None
    api = run_api(args.quick, parts)
    jupyter = run_baseline(args.quick) if "jupyter" in parts else None
    table = report(engine, api, jupyter)
    table.print()
    failures = (engine["failures"]["count"] if engine else 0) + (api["burst"]["errors"] if "burst" in api else 0)
    print(f"\nfailed checks: {failures}; load at the end {cpu_load()}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": table.rows, "engine": engine, "api": api, "jupyter": jupyter},
                                            indent=2, default=str))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
