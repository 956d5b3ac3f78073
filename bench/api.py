"""HTTP benchmarks against a real `cellbox serve` on loopback. Run by hand:

    .venv/bin/python bench/api.py [--quick]

Prints p50/p99 of: create container (back to back, and paced); execute `1+1` round trip; 50 clients creating a
container at the same moment; and 50 concurrent clients each creating a container and running 20 executions
(throughput, errors, and the create latency when creates compete with other clients' executions).
Targets: create p50 <= 15 ms, execute p50 <= 3 ms. ``--warm-pool N`` starts the server with
CELLBOX_WARM_POOL=N (what an operator expecting bursts of N creates would set).

The baseline, measured first in the same run, is the HTTP floor: a POST with a small JSON body answered by a
trivial ASGI app under the same uvicorn (uvloop, httptools). Every figure is printed with its ratio to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


FLOOR: list[float] = []  # the baseline's p50, once measured


def percentiles(samples: list[float]) -> str:
    median = statistics.median(samples)
    ratio = f"  {median / FLOOR[0]:6.1f}x floor" if FLOOR else ""
    return f"p50 {median * 1000:7.2f} ms  p99 {p99(samples) * 1000:7.2f} ms  (n={len(samples)}){ratio}"


TRIVIAL_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
"""


async def floor_samples(base: str, count: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:  # the same client as every other figure
        for _ in range(600):
            try:
                await http.post("/", json={"code": "1+1"})
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        samples = []
        for _ in range(count):
            samples.append(await timed(lambda: http.post("/", json={"code": "1+1"})))
        return samples


@contextlib.contextmanager
def trivial_server(app: str = TRIVIAL_APP) -> Iterator[str]:
    """The floor's server: the trivial ASGI app (or ``app``, the source of another) under the same uvicorn
    (uvloop, httptools); yields its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cellbox-floor-") as where:
        with open(os.path.join(where, "trivial.py"), "w") as f:
            f.write(app)
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "trivial:app", "--port", str(port),
                                   "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"],
                                  cwd=where, stderr=subprocess.DEVNULL)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(30)


def measure_floor(quick: bool) -> None:
    """The same-run baseline: a trivial ASGI app's round trip under the same server stack."""
    with trivial_server() as base:
        samples = asyncio.run(floor_samples(base, 200 if quick else 1000))
    print(f"baseline: trivial ASGI POST      {percentiles(samples)}")
    FLOOR.append(statistics.median(samples))


def start_server(data: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real `cellbox serve` on loopback in open local mode, once it is healthy: (process, base URL)."""
    port = free_port()
    env = {**os.environ, "CELLBOX_API_KEYS": "", "CELLBOX_LOG_LEVEL": "warning", **env}
    server = subprocess.Popen([sys.executable, "-m", "cellbox.cli", "serve", "--port", str(port),
                               "--data-dir", data], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if server.poll() is not None:
            raise RuntimeError("cellbox serve exited before it was healthy")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("cellbox serve did not become healthy")


async def timed(call) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def pool_full(base: str) -> None:
    """Until the server's warm pool has refilled (after the earlier phases emptied it), so the burst starts steady."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for _ in range(1200):
            pool = (await http.get("/health")).json().get("warm_pool")
            if pool is None:  # a server from before stop 7 does not say: give it time
                await asyncio.sleep(5)
                return
            if pool["ready"] >= pool["size"]:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the warm pool did not refill: {pool}")


async def bench(base: str, quick: bool) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        async def create() -> str:
            response = await http.post("/v1/containers", json={"name": "bench"})
            response.raise_for_status()
            return str(response.json()["id"])

        for _ in range(3):
            await http.delete(f"/v1/containers/{await create()}")
        created: list[str] = []
        samples = []
        for _ in range(20 if quick else 100):
            start = time.perf_counter()
            created.append(await create())
            samples.append(time.perf_counter() - start)
        print(f"create container (HTTP), b2b     {percentiles(samples)}")
        paced = []
        for _ in range(10 if quick else 50):
            await asyncio.sleep(0.1)
            start = time.perf_counter()
            box = await create()
            paced.append(time.perf_counter() - start)
            await http.delete(f"/v1/containers/{box}")
        print(f"create container (HTTP), paced   {percentiles(paced)}")
        cid = created[0]
        for _ in range(20):
            await http.post(f"/v1/containers/{cid}/execute", json={"code": "1+1"})
        samples = []
        for _ in range(100 if quick else 500):
            start = time.perf_counter()
            response = await http.post(f"/v1/containers/{cid}/execute", json={"code": "1+1"})
            samples.append(time.perf_counter() - start)
            assert response.json()["outputs"] == [{"type": "logs", "logs": "2\n"}]
        print(f"execute 1+1 round trip (HTTP)    {percentiles(samples)}")
        for box in created:
            await http.delete(f"/v1/containers/{box}")

    clients, runs = (10, 5) if quick else (50, 20)
    sessions = [httpx.AsyncClient(base_url=base, timeout=120) for _ in range(clients)]
    try:
        # Clients are made and connected before any clock starts: building 50 httpx clients costs the benchmark
        # process most of a second of CPU, which would otherwise be counted as server latency.
        await asyncio.gather(*(session.get("/health") for session in sessions))
        await burst_alone(base, sessions)
        await burst_with_executions(base, sessions, runs)
    finally:
        await asyncio.gather(*(session.aclose() for session in sessions))


async def burst_alone(base: str, sessions: list[httpx.AsyncClient]) -> None:
    """Every client creates one container at the same moment, and nothing else runs."""
    await pool_full(base)

    async def one(http: httpx.AsyncClient) -> tuple[float, str]:
        start = time.perf_counter()
        response = await http.post("/v1/containers", json={"name": "burst"})
        response.raise_for_status()
        return time.perf_counter() - start, str(response.json()["id"])

    results = await asyncio.gather(*(one(http) for http in sessions))
    print(f"create container (HTTP), {len(sessions)} at once, alone  {percentiles([t for t, _ in results])}")
    await asyncio.gather(*(sessions[0].delete(f"/v1/containers/{cid}") for _, cid in results))


async def burst_with_executions(base: str, sessions: list[httpx.AsyncClient], runs: int) -> dict[str, Any]:
    """Every client creates a container and runs executions on it: creates compete with other clients' runs.
    Returns the samples, and how many executions finished while some create was still waiting."""
    errors = 0
    latencies: list[float] = []
    creates: list[float] = []
    finished: list[float] = []  # when each execution ended
    last_create = 0.0  # when the slowest create ended

    async def one_client(http: httpx.AsyncClient) -> None:
        nonlocal errors, last_create
        start = time.perf_counter()
        response = await http.post("/v1/containers", json={"name": "load"})
        creates.append(time.perf_counter() - start)
        last_create = max(last_create, time.perf_counter())
        if response.status_code != 200:
            errors += 1
            return
        cid = response.json()["id"]
        for i in range(runs):
            start = time.perf_counter()
            result = await http.post(f"/v1/containers/{cid}/execute", json={"code": f"{i}*2"})
            latencies.append(time.perf_counter() - start)
            finished.append(time.perf_counter())
            if result.status_code != 200 or result.json()["outputs"] != [{"type": "logs", "logs": f"{i*2}\n"}]:
                errors += 1
        await http.delete(f"/v1/containers/{cid}")

    await pool_full(base)
    start = time.perf_counter()
    await asyncio.gather(*(one_client(http) for http in sessions))
    elapsed = time.perf_counter() - start
    total = len(sessions) * runs
    print(f"{len(sessions)} clients x {runs} executions: {total / elapsed:7.1f} executions/s over {elapsed:.2f} s, "
          f"errors {errors}; per execution {percentiles(latencies)}")
    print(f"create container (HTTP), {len(sessions)} at once, with executions {percentiles(creates)}")
    flowing = sum(1 for t in finished if t < last_create)
    return {"creates": creates, "latencies": latencies, "errors": errors, "rate": total / elapsed,
            "executions_while_creates_waited": flowing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--warm-pool", type=int, help="CELLBOX_WARM_POOL for the server (default: its own)")
    args = parser.parse_args()
    measure_floor(args.quick)
    extra = {"CELLBOX_WARM_POOL": str(args.warm_pool)} if args.warm_pool is not None else {}
    with tempfile.TemporaryDirectory(prefix="cellbox-bench-") as data:
        server, base = start_server(data, **extra)
        try:
            asyncio.run(bench(base, args.quick))
        finally:
            server.terminate()
            server.wait(60)

if __name__ == "__main__":
    main()
