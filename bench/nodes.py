"""Issue #15: executions per second with 1, 2 and 3 nodes on this machine, directly and through one entry node (the
relay), each beside baselines from the same run; and what that predicts per added machine. Run by hand, as root,
from the repository root:

    .venv/bin/python bench/nodes.py [--quick] [--clients K] [--preload none] [--json-out FILE]

1. One PostgreSQL (tests/postgres.py) with a fresh database per cluster. Four clusters run side by side, each
   idle but for the one measured: 1 node on SQLite (the single-machine default, a reference), and 1, 2 and 3
   nodes on PostgreSQL. Every node is a real `cellbox serve` on a free 127.0.0.1 port with its own data directory
   and a uid/gid range of its own (CELLBOX_SANDBOX_ID_COUNT=1000), open mode (no API keys), default preload
   (numpy, pandas, matplotlib, PIL, as users have) unless `--preload none`, default heartbeat and warm pool.
2. Baselines: the HTTP floor (bench/api.py's trivial ASGI app under the same uvicorn), alone and under K clients,
   at the start and at the end; and the 1-node figure itself, which every cluster's figure is divided by.
3. K (`--clients`, or the smallest of 4, 8, 16 that gets within 5% of the best 1-node throughput; K = 1 is the
   unloaded reference): K clients,
   each its own httpx.AsyncClient (keep-alive) and its own container, made through node (i mod N) and placed by
   load as usual (its true owner read from the catalog). Each loops
   `POST /v1/containers/{id}/execute {"code": "1+1"}` for a fixed time; every answer is checked. "direct": each
   client talks to its container's node; "entry": every client talks to node 1, which relays the requests for
   containers on other nodes to their owner. Two more on the 2-node cluster, with K containers all on node 2:
   "all on node 2, direct" (one loaded node that has a peer, so it routes each request) and "all on node 2,
   through node 1" (every request relayed); node 1 is drained while they are made. Rounds alternate every
   cluster and variant, so the machine's drift hits them alike; the figures pool the rounds.
4. The relay's cost: unloaded, one client alternating the same container directly and through node 1 (its
   latency); loaded, the CPU time per execution of each group of processes (client, each server, sandboxes,
   PostgreSQL, the idle clusters, and "others": the rest of the machine's busy time), read from /proc around each
   measured window. From those: a prediction per added machine.

An answer is right when its outputs are exactly the logs "2\n". Before e4d4458, after 1000 results in one session
IPython's output cache warned in the logs ("Output cache limit (currently 1000 entries) hit", then every 200 more);
such an answer (the warning, then "2") is counted apart, not as an error, so older checkouts can be compared.

On one machine the nodes share its cores, so throughput should not grow with N here: what N adds is per-node
overhead, and what the entry variant adds is the relay's. Nothing leaves loopback; every server, container and
the PostgreSQL are gone at the end, also after Ctrl-C or a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ holds the PostgreSQL helper
from tests.postgres import Postgres, node_of_container, running_postgres

from api import free_port, p99, trivial_server  # bench/api.py
from engine import cpu_load, foreign_activity, git_state  # bench/engine.py

CODE = {"code": "1+1"}
LOGS_2 = [{"type": "logs", "logs": "2\n"}]
CACHE_WARNING = "UserWarning: Output cache limit (currently 1000 entries) hit."
SWEEP = (1, 4, 8, 16)
FIRST_UID = 600_000  # clear of the tests' ranges (100000 + 65536, 400000, 500000)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- servers ----------------------------------------------------------------------------------------


class Node:
    """One `cellbox serve` on loopback, in a session of its own (Ctrl-C reaches this process, which stops it)."""

    def __init__(self, where: Path, uid: int, env: dict[str, str]) -> None:
        self.where, self.port = where, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CELLBOX_API_KEYS": "", "CELLBOX_LOG_LEVEL": "warning",
                    "CELLBOX_SANDBOX_UID": str(uid), "CELLBOX_SANDBOX_GID": str(uid),
                    "CELLBOX_SANDBOX_ID_COUNT": "1000", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.where / "data").mkdir(parents=True)
        with open(self.where / "stderr", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cellbox.cli", "serve", "--port", str(self.port), "--data-dir",
                 str(self.where / "data")], env=self.env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"cellbox serve on {self.url} exited: {self.said()}")
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def said(self) -> str:
        with contextlib.suppress(OSError):
            return (self.where / "stderr").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


@dataclass
class Cluster:
    name: str
    nodes: list[Node]
    # (index of the owner, container id), by set: "spread" (placed by load), "node 2" (all on node 2)
    containers: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: {"spread": [], "node 2": []})

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.process is not None]


@contextlib.contextmanager
def clusters(postgres: Postgres, preload: str | None) -> Iterator[list[Cluster]]:
    """The four clusters, started at once; healthy, and each node knowing its peers, when this yields."""
    extra = {} if preload is None else {"CELLBOX_PRELOAD": preload}
    shapes = [("1 node, SQLite", 1, False), ("1 node", 1, True), ("2 nodes", 2, True), ("3 nodes", 3, True)]
    with tempfile.TemporaryDirectory(prefix="cellbox-bench-nodes-") as tmp, contextlib.ExitStack() as stack:
        made, uid = [], FIRST_UID
        for index, (name, count, shared) in enumerate(shapes):
            env = {**extra, **({"CELLBOX_DATABASE_URL": postgres.database()} if shared else {})}
            nodes = []
            for n in range(count):
                nodes.append(Node(Path(tmp, f"c{index}n{n}"), uid, env))
                uid += 10_000
            made.append(Cluster(name, nodes))
        for node in (node for cluster in made for node in cluster.nodes):
            stack.callback(node.stop)
            node.start()
        deadline = time.monotonic() + 300
        waiting = [node for cluster in made for node in cluster.nodes]
        while waiting := [node for node in waiting if not node.healthy()]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after 300 s: {[node.url for node in waiting]}")
            time.sleep(0.2)
        time.sleep(1.5 * 5 + 1)  # a node learns its peers at its next sweep, one heartbeat (5 s) at most
        yield made


# --- CPU accounting ---------------------------------------------------------------------------------


def _stat(pid: str) -> tuple[int, float, float] | None:
    """(parent pid, CPU seconds, CPU seconds of its children that ended) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def _postmaster(port: int) -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
            if args[0].endswith(b"/postgres") and str(port).encode() in args:
                return int(pid)
    raise RuntimeError("the PostgreSQL server process was not found")


class Meter:
    """CPU seconds used so far by each group of processes, and by the whole machine (from /proc/stat). The
    measured cluster's servers are counted one by one; every other cluster's processes together, as "idle"."""

    def __init__(self, servers: list[int], postmaster: int) -> None:
        self.servers, self.postmaster = set(servers), postmaster

    def read(self, measured: list[int]) -> dict[str, float]:
        stats = {int(pid): got for pid in filter(str.isdigit, os.listdir("/proc")) if (got := _stat(pid))}
        out = {"client": sum(os.times()[:2]), "servers": 0.0, "sandboxes": 0.0, "idle clusters": 0.0,
               "postgres": 0.0, **{f"node {n + 1}": stats.get(pid, (0, 0.0, 0.0))[1] for n, pid in enumerate(measured)}}
        for pid, (_, seconds, ended) in stats.items():
            if pid == self.postmaster:  # its backends come and go (the servers' pools): count those that ended
                out["postgres"] += seconds + ended
            elif (group := self._group(pid, stats, set(measured))) is not None:
                out[group] += seconds
        with open("/proc/stat") as f:
            jiffies = [int(x) for x in f.readline().split()[1:]]
        out["machine"] = (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / CLK_TCK  # all but idle and iowait
        return out

    def _group(self, pid: int, stats: dict[int, tuple[int, float, float]], measured: set[int]) -> str | None:
        if pid in self.servers:
            return "servers" if pid in measured else "idle clusters"
        ancestor = pid
        for _ in range(10):  # a sandbox's kernel -> init -> monitor -> template -> server
            ancestor = stats.get(ancestor, (0, 0.0, 0.0))[0]
            if ancestor in self.servers:
                return "sandboxes" if ancestor in measured else "idle clusters"
            if ancestor == self.postmaster:
                return "postgres"
            if ancestor in (0, 1, os.getpid()):
                return None
        return None


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Client:
    http: httpx.AsyncClient
    cid: str
    relayed: bool = False
    samples: list[tuple[float, float]] = field(default_factory=list)  # (end, latency)


@dataclass
class Errors:
    count: int = 0
    examples: list[str] = field(default_factory=list)
    cache_warnings: int = 0  # right answers that also carry IPython's "Output cache limit" warning

    def record(self, what: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(what[:2000])
            print(f"  ERROR {what[:2000]}", flush=True)


async def execute(http: httpx.AsyncClient, cid: str, errors: Errors) -> bool:
    try:
        reply = await http.post(f"/v1/containers/{cid}/execute", json=CODE)
    except httpx.HTTPError as exc:
        errors.record(f"{cid}: {exc!r}")
        await asyncio.sleep(0.01)
        return False
    outputs = reply.json().get("outputs") if reply.status_code == 200 else None
    if outputs == LOGS_2:
        return True
    if outputs and len(outputs) == 1 and CACHE_WARNING in outputs[0].get("logs", "") \
            and outputs[0]["logs"].endswith("\n2\n"):
        errors.cache_warnings += 1  # every 200 results after the first 1000 in a session: see the docstring
        return True
    errors.record(f"{cid}: {reply.status_code} {reply.text}")
    return False


async def drive(clients: list[Client], seconds: float, meter: Meter, measured: list[int],
                errors: Errors) -> dict[str, Any]:
    """Every client loops executions for a second of warm-up, then ``seconds`` measured."""
    stop = False

    async def loop(client: Client) -> None:
        while not stop:
            start = time.perf_counter()
            if await execute(client.http, client.cid, errors):
                end = time.perf_counter()
                client.samples.append((end, end - start))

    for client in clients:
        client.samples.clear()
    tasks = [asyncio.create_task(loop(client)) for client in clients]
    await asyncio.sleep(1.0)
    t0, cpu0 = time.perf_counter(), meter.read(measured)
    await asyncio.sleep(seconds)
    t1, cpu1 = time.perf_counter(), meter.read(measured)
    stop = True
    await asyncio.gather(*tasks)
    kept = [(client.relayed, latency) for client in clients for end, latency in client.samples
            if t0 <= end <= t1]
    return {"seconds": t1 - t0, "count": len(kept), "latencies": [lat for _, lat in kept],
            "relayed": [lat for relayed, lat in kept if relayed],
            "local": [lat for relayed, lat in kept if not relayed],
            "cpu": {group: cpu1[group] - cpu0[group] for group in cpu0}}


async def floor_figures(base: str, clients: int, seconds: float, rounds: int) -> dict[str, Any]:
    """The trivial app: one client's round trips, then K clients' throughput, through the same httpx client."""
    sessions = [httpx.AsyncClient(base_url=base, timeout=30) for _ in range(clients)]
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                await sessions[0].post("/", json=CODE)
                break
            await asyncio.sleep(0.1)
        await asyncio.gather(*(s.post("/", json=CODE) for s in sessions))
        alone = []
        for i in range(rounds + 50):
            start = time.perf_counter()
            (await sessions[0].post("/", json=CODE)).raise_for_status()
            if i >= 50:
                alone.append(time.perf_counter() - start)
        done, stop = 0, False

        async def loop(http: httpx.AsyncClient) -> None:
            nonlocal done
            while not stop:
                (await http.post("/", json=CODE)).raise_for_status()
                done += 1

        tasks = [asyncio.create_task(loop(s)) for s in sessions]
        await asyncio.sleep(0.5)
        start, before = time.perf_counter(), done
        await asyncio.sleep(seconds)
        rate = (done - before) / (time.perf_counter() - start)
        stop = True
        await asyncio.gather(*tasks)
        return {"alone": alone, "rate": rate}
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))


def node_ids(cluster: Cluster) -> list[str]:
    return [str(httpx.get(n.url + "/health", timeout=30).json()["node"]["id"]) for n in cluster.nodes]


def owner_of(cluster: Cluster, cid: str, ids: list[str]) -> int:
    """The index of the node that runs ``cid``, from the shared catalog: a create goes to the least loaded node,
    whichever node received it."""
    url = cluster.nodes[0].env.get("CELLBOX_DATABASE_URL")
    if not url:
        return 0
    return ids.index(node_of_container(url, cid))


def set_state(cluster: Cluster, node: int, command: str, ids: list[str]) -> None:
    """`cellbox node drain|resume` for one node of a cluster, as an operator runs it."""
    subprocess.run([sys.executable, "-m", "cellbox.cli", "node", command, ids[node], "--data-dir",
                    str(cluster.nodes[node].where / "data")], env=cluster.nodes[node].env, check=True,
                   capture_output=True, timeout=120)


async def make_containers(cluster: Cluster, count: int, errors: Errors, pinned: bool = False) -> None:
    """``count`` containers in the set "spread" (made through node (i mod N), placed by load as usual) or "node 2"
    (all on node 2: the others are drained meanwhile), each with its true owner, each run 20 times before any
    clock."""
    which = cluster.containers["node 2" if pinned else "spread"]
    ids = node_ids(cluster)
    others = [n for n in range(len(cluster.nodes)) if n != 1] if pinned else []
    for node in others:
        set_state(cluster, node, "drain", ids)
    try:
        async with contextlib.AsyncExitStack() as stack:
            https = [await stack.enter_async_context(httpx.AsyncClient(base_url=n.url, timeout=120))
                     for n in cluster.nodes]
            for i in range(len(which), count):
                entry = 1 if pinned else i % len(cluster.nodes)
                reply = await https[entry].post("/v1/containers", json={"name": f"bench-nodes-{i}"})
                if reply.status_code != 200:
                    raise RuntimeError(f"create on {cluster.nodes[entry].url}: {reply.status_code} "
                                       f"{reply.text[:500]}")
                cid = str(reply.json()["id"])
                which.append((owner_of(cluster, cid, ids), cid))
            for owner, cid in which:
                for _ in range(20):
                    await execute(https[owner], cid, errors)
    finally:
        for node in others:
            set_state(cluster, node, "resume", ids)


@dataclass(frozen=True)
class Variant:
    label: str
    cluster: int  # its index in clusters()
    via_entry: bool = False  # every client talks to node 1
    pinned: bool = False  # the containers all on node 2 (else spread over the nodes)


VARIANTS = [Variant("1 node, SQLite, direct", 0), Variant("1 node, direct", 1), Variant("2 nodes, direct", 2),
            Variant("2 nodes, through node 1", 2, via_entry=True), Variant("3 nodes, direct", 3),
            Variant("3 nodes, through node 1", 3, via_entry=True),
            Variant("2 nodes, all on node 2, direct", 2, pinned=True),
            Variant("2 nodes, all on node 2, through node 1", 2, via_entry=True, pinned=True)]


def sessions(cluster: Cluster, count: int, variant: Variant) -> list[Client]:
    made = []
    for owner, cid in cluster.containers["node 2" if variant.pinned else "spread"][:count]:
        node = cluster.nodes[0 if variant.via_entry else owner]
        made.append(Client(httpx.AsyncClient(base_url=node.url, timeout=120), cid,
                           relayed=variant.via_entry and owner != 0))
    return made


async def measured(variant: Variant, cluster: Cluster, count: int, seconds: float, meter: Meter,
                   errors: Errors) -> dict[str, Any]:
    clients = sessions(cluster, count, variant)
    try:
        before_errors = errors.count
        for client in clients:  # connected (and the relay's own connections opened) before the clock
            await execute(client.http, client.cid, errors)
        noise = foreign_activity()
        out = await drive(clients, seconds, meter, cluster.pids(), errors)
    finally:
        await asyncio.gather(*(client.http.aclose() for client in clients))
    out["errors"] = errors.count - before_errors
    rate, cpu = out["count"] / out["seconds"], out["cpu"]
    nodes = "/".join(f"{cpu[f'node {n + 1}'] / out['seconds']:.2f}" for n in range(len(cluster.nodes)))
    print(f"  {variant.label:<40} {rate:7.1f} executions/s, p50 {statistics.median(out['latencies']) * 1000:6.2f} "
          f"ms, busy {cpu['machine'] / out['seconds']:.2f} cores (servers {nodes}), errors {out['errors']} "
          f"(load {cpu_load()}{'; ' + noise if noise else ''})", flush=True)
    return out


async def relay_hop(cluster: Cluster, pairs: int, errors: Errors) -> dict[str, list[float]]:
    """Unloaded: one client runs the same container (on node 2) directly and through node 1, alternately."""
    _, cid = cluster.containers["node 2"][0]
    samples: dict[str, list[float]] = {"direct": [], "relayed": []}
    async with httpx.AsyncClient(base_url=cluster.nodes[1].url, timeout=60) as direct, \
            httpx.AsyncClient(base_url=cluster.nodes[0].url, timeout=60) as entry:
        for i in range(pairs + 20):
            for name, http in (("direct", direct), ("relayed", entry)):
                start = time.perf_counter()
                ok = await execute(http, cid, errors)
                if ok and i >= 20:
                    samples[name].append(time.perf_counter() - start)
    return samples


async def delete_containers(all_clusters: list[Cluster]) -> int:
    deleted = 0
    for cluster in all_clusters:
        for owner, cid in [c for which in cluster.containers.values() for c in which]:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(base_url=cluster.nodes[owner].url, timeout=60) as http:
                    deleted += (await http.delete(f"/v1/containers/{cid}")).status_code == 200
        cluster.containers = {"spread": [], "node 2": []}
    return deleted


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Plan:
    seconds: float
    sweep_seconds: float
    rounds: int
    pairs: int
    clients: int | None


async def run(all_clusters: list[Cluster], meter: Meter, floor_base: str, plan: Plan) -> dict[str, Any]:
    errors = Errors()
    out: dict[str, Any] = {"phases": {}}
    one, two = all_clusters[1], all_clusters[2]
    quiet = meter.read([])
    await asyncio.sleep(2)
    idle = meter.read([])
    out["idle"] = {group: (idle[group] - quiet[group]) / 2 for group in idle}
    print(f"  idle, every cluster up: {out['idle']['machine']:.2f} cores busy, of which our clusters "
          f"{out['idle']['idle clusters']:.2f} and PostgreSQL {out['idle']['postgres']:.2f}", flush=True)
    await make_containers(one, max(SWEEP) if plan.clients is None else plan.clients, errors)
    out["sweep"] = {}
    for k in SWEEP if plan.clients is None else ():
        out["sweep"][k] = await measured(Variant(f"sweep: 1 node, {k} clients", 1), one, k, plan.sweep_seconds,
                                         meter, errors)
    k = plan.clients or choose_clients(out["sweep"])
    out["clients"] = k
    print(f"  K = {k} clients from here on", flush=True)
    for cluster in all_clusters:
        await make_containers(cluster, k, errors)
    await make_containers(two, k, errors, pinned=True)
    out["floor_start"] = await floor_figures(floor_base, k, plan.sweep_seconds, plan.pairs)
    out["relay_hop"] = await relay_hop(two, plan.pairs, errors)
    for round_ in range(plan.rounds):
        print(f"  round {round_ + 1} of {plan.rounds}", flush=True)
        for variant in VARIANTS:
            phase = await measured(variant, all_clusters[variant.cluster], k, plan.seconds, meter, errors)
            out["phases"].setdefault(variant.label, []).append(phase)
    out["floor_end"] = await floor_figures(floor_base, k, plan.sweep_seconds, plan.pairs)
    made = sum(len(which) for cluster in all_clusters for which in cluster.containers.values())
    out["deleted"] = f"{await delete_containers(all_clusters)} of {made}"
    out["errors"] = {"count": errors.count, "examples": errors.examples, "cache_warnings": errors.cache_warnings}
    return out


def choose_clients(sweep: dict[int, dict[str, Any]]) -> int:
    """The fewest clients (at least 4, so that 3 nodes each get some) that get within 5% of the best throughput:
    one node saturated, no needless queueing. K = 1 is there for the unloaded latency."""
    rates = {k: phase["count"] / phase["seconds"] for k, phase in sweep.items() if k >= 4}
    best = max(rates.values())
    return min(k for k, rate in rates.items() if rate >= 0.95 * best)


# --- report -----------------------------------------------------------------------------------------


def pooled(phases: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(p["seconds"] for p in phases)
    count = sum(p["count"] for p in phases)
    latencies = [lat for p in phases for lat in p["latencies"]]
    relayed = [lat for p in phases for lat in p["relayed"]]
    local = [lat for p in phases for lat in p["local"]]
    cpu = {group: sum(p["cpu"][group] for p in phases) for group in phases[0]["cpu"]}
    cpu["others"] = cpu["machine"] - sum(used for group, used in cpu.items() if group in GROUPS)
    return {"rate": count / seconds, "rates": [p["count"] / p["seconds"] for p in phases],
            "p50": statistics.median(latencies) * 1000, "p99": p99(latencies) * 1000,
            "errors": sum(p["errors"] for p in phases), "relayed_share": len(relayed) / len(latencies),
            "relayed_p50": statistics.median(relayed) * 1000 if relayed else None,
            "local_p50": statistics.median(local) * 1000 if local else None,
            "cpu_ms": {group: used / count * 1000 for group, used in cpu.items()},
            "cores": {group: used / seconds for group, used in cpu.items()}}


GROUPS = ("client", "servers", "sandboxes", "idle clusters", "postgres")


def ms(samples: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(samples) * 1000, "p99": p99(samples) * 1000}


def print_floor(out: dict[str, Any]) -> float:
    start, end = ms(out["floor_start"]["alone"]), ms(out["floor_end"]["alone"])
    print(f"\nHTTP floor (trivial ASGI POST), 1 client: p50 {start['p50']:.3f} ms at the start, {end['p50']:.3f} ms "
          f"at the end (p99 {start['p99']:.3f} / {end['p99']:.3f})")
    print(f"HTTP floor, {out['clients']} clients: {out['floor_start']['rate']:.0f} requests/s at the start, "
          f"{out['floor_end']['rate']:.0f} at the end")
    return (start["p50"] + end["p50"]) / 2


def print_sweep(out: dict[str, Any], floor_p50: float) -> None:
    print("\nsweep, 1 node (PostgreSQL), direct, one window each:")
    for clients, phase in out["sweep"].items():
        fig = pooled([phase])
        print(f"  K={clients:<3} {fig['rate']:8.1f} executions/s  p50 {fig['p50']:6.2f} ms  p99 {fig['p99']:6.2f} ms"
              f"  busy {fig['cores']['machine']:.2f} cores  p50 × floor p50 {fig['p50'] / floor_p50:5.1f}")


def print_table(out: dict[str, Any], figures: dict[str, Any]) -> None:
    base = figures["1 node, direct"]
    print(f"\n{out['clients']} clients, {len(base['rates'])} round(s) pooled; × = ratio to '1 node, direct' "
          f"(PostgreSQL) of the same run. CPU ms per execution: client/servers/sandboxes/postgres/others")
    print(f"{'figure':<40}{'exec/s':>8}{'×':>6}{'rounds/s':>13}{'p50 ms':>8}{'×':>6}{'p99 ms':>8}{'err':>5}"
          f"{'busy':>6}  CPU ms per execution")
    for label, fig in figures.items():
        cpu = fig["cpu_ms"]
        spread = f"{min(fig['rates']):.0f}-{max(fig['rates']):.0f}"
        share = (f"; {fig['relayed_share']:.0%} relayed, p50 {fig['relayed_p50']:.2f} relayed / "
                 f"{fig['local_p50']:.2f} local" if fig["relayed_share"] and fig["local_p50"] else
                 f"; {fig['relayed_share']:.0%} relayed" if fig["relayed_share"] else "")
        nodes = "/".join(f"{fig['cores'][g]:.2f}" for g in fig["cores"] if g.startswith("node "))
        print(f"{label:<40}{fig['rate']:>8.1f}{fig['rate'] / base['rate']:>6.2f}{spread:>13}{fig['p50']:>8.2f}"
              f"{fig['p50'] / base['p50']:>6.2f}{fig['p99']:>8.2f}{fig['errors']:>5}{fig['cores']['machine']:>6.2f}  "
              f"{'/'.join(f'{cpu[g]:.2f}' for g in ('client', 'servers', 'sandboxes', 'postgres', 'others'))}"
              f"; server cores {nodes}{share}")


def report(out: dict[str, Any], cores: int) -> dict[str, Any]:
    floor_p50 = print_floor(out)
    if out["sweep"]:
        print_sweep(out, floor_p50)
    figures = {label: pooled(phases) for label, phases in out["phases"].items()}
    print_table(out, figures)
    hop = {name: ms(values) for name, values in out["relay_hop"].items()}
    added = hop["relayed"]["p50"] - hop["direct"]["p50"]
    print(f"\nrelay, unloaded (1 client, a container on node 2, direct and through node 1 alternately): direct p50 "
          f"{hop['direct']['p50']:.2f} ms (p99 {hop['direct']['p99']:.2f}), relayed p50 {hop['relayed']['p50']:.2f} "
          f"ms (p99 {hop['relayed']['p99']:.2f}): +{added:.2f} ms, {added / floor_p50:.1f} × the floor's p50")
    return {"floor_p50_ms": floor_p50, "figures": figures, "relay_hop": hop, "relay_added_ms": added,
            "prediction": predict(figures, cores)}


def predict(figures: dict[str, Any], cores: int) -> dict[str, Any]:
    """Per machine, a node with the machine's cores to itself (clients and PostgreSQL elsewhere): its executions per
    second are bounded by its cores over the node-side CPU per execution (server + sandboxes), and by one core over
    the server's own (one event loop). A node with peers looks each container's owner up (from "2 nodes, all on
    node 2, direct"); with M machines and clients entering at a random node, (M-1)/M of the requests also cost
    the entry node a relay (node 1's CPU per execution in "all on node 2, through node 1", all relayed)."""
    alone, peered = figures["1 node, direct"]["cpu_ms"], figures["2 nodes, all on node 2, direct"]["cpu_ms"]
    relay = figures["2 nodes, all on node 2, through node 1"]["cpu_ms"]["node 1"]
    pg = peered["postgres"]
    print(f"\nprediction per machine ({cores} cores each, one node alone on it; clients and PostgreSQL elsewhere), "
          f"from CPU ms per execution: alone server {alone['servers']:.2f} + sandboxes {alone['sandboxes']:.2f}; "
          f"with a peer server {peered['servers']:.2f} + sandboxes {peered['sandboxes']:.2f}; relay "
          f"+{relay:.2f} on the entry node per relayed request; PostgreSQL {pg:.2f} "
          f"({f'{1000 / pg:.0f}' if pg > 0 else 'too little to measure:'} executions/s per PostgreSQL core)")
    rows = []
    for machines in (1, 2, 3, 4, 8):
        cpu = alone if machines == 1 else peered
        wrong = (machines - 1) / machines
        at_owner = machines * 1000 * min(cores / (cpu["servers"] + cpu["sandboxes"]), 1 / cpu["servers"])
        at_random = machines * 1000 * min(cores / (cpu["servers"] + cpu["sandboxes"] + wrong * relay),
                                          1 / (cpu["servers"] + wrong * relay))
        rows.append({"machines": machines, "at_owner": at_owner, "at_random": at_random,
                     "postgres_cores": at_owner * pg / 1000})
        print(f"  {machines} machine(s): {at_owner:6.0f} executions/s, clients at the owner; {at_random:6.0f} entering "
              f"at a random node ({at_random / at_owner:.2f}); PostgreSQL busy {at_owner * pg / 1000:.2f} cores")
    measured = figures["1 node, direct"]["rate"]
    print(f"  check: here 1 node shares the {cores} cores with the clients, PostgreSQL and whatever else runs: "
          f"measured {measured:.0f}/s, {measured / rows[0]['at_owner']:.2f} × the 1-machine prediction")
    return {"relay_cpu_ms": relay, "rows": rows}


# --- main -------------------------------------------------------------------------------------------


def stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short windows and one round, for a smoke run")
    parser.add_argument("--clients", type=int, help=f"K, the concurrent clients, at least 3 (default: chosen from "
                        f"{SWEEP[1:]})")
    parser.add_argument("--preload", choices=("default", "none"), default="default",
                        help="the template's preload: Cellbox's default (numpy, pandas, ...) or none ([])")
    parser.add_argument("--json-out", type=Path, help="write every number to this file")
    args = parser.parse_args()
    if args.clients is not None and args.clients < 3:
        parser.error("--clients must be at least 3: each of 3 nodes needs a client")
    if os.geteuid() != 0:
        sys.exit("the engine needs root (namespaces and cgroups); run as root")
    stop_on_sigterm()
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    print(f"cellbox nodes (issue #15): {cores} cpus ({model}), kernel {platform.release()}, python "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load at the start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {foreign_activity() or 'nobody else running'}, "
          f"at {git_state()}; preload {args.preload}", flush=True)
    plan = Plan(seconds=3 if args.quick else 8, sweep_seconds=3 if args.quick else 6, rounds=1 if args.quick else 3,
                pairs=100 if args.quick else 300, clients=args.clients)
    with contextlib.contextmanager(running_postgres)() as postgres, trivial_server() as floor_base, \
            clusters(postgres, None if args.preload == "default" else "[]") as all_clusters:
        servers = [node.process.pid for cluster in all_clusters for node in cluster.nodes if node.process]
        out = asyncio.run(run(all_clusters, Meter(servers, _postmaster(postgres.port)), floor_base, plan))
    summary = report(out, cores)
    print(f"\nerrors: {out['errors']['count']}; right answers that also carried IPython's output-cache warning: "
          f"{out['errors']['cache_warnings']}; containers deleted: {out['deleted']}; load at the end {cpu_load()}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"machine": {"cpus": cores, "model": model, "load_start": load},
                                             "raw": out, "summary": summary}, indent=2, default=str))
    if out["errors"]["count"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
