"""Baseline: a plain Jupyter kernel per container (ipykernel + jupyter_client), measured like bench/engine.py.

    .venv/bin/python bench/jupyter_baseline.py [--quick] [--kernels 5] [--json-out FILE]

Each kernel is started with ``KernelManager`` on the ipc transport (unix sockets in a private temporary
directory, so no TCP port is opened at all), with the same thread settings Cellbox's template uses
(OPENBLAS/OMP/MKL_NUM_THREADS=1) and a pre-built matplotlib font cache. It is unsandboxed: this is the
cost of the Jupyter machinery alone (§7 of sandboxing-measured.md measured bwrap adding ~13 ms to start).
One warm-up kernel is started and shut down first (IPython profile, page cache); it is not counted.

Per kernel: start → ready (``wait_for_ready``), first ``print(1)``, ``import numpy, pandas,
matplotlib.pyplot``, a small plot returned as PNG, then ``1+1`` round trips (execute_reply, and iopub
status idle). Memory (smaps_rollup of the kernel process): idle right after ready, and after the
imports and plot with every kernel still alive (so PSS shares library pages among them).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

MIB = 1 << 20
PLOT = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])"
IMPORTS = "import numpy, pandas, matplotlib.pyplot"
TIMEOUT = 60.0


def percentile(values: list[float], q: float) -> float:
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


def smaps(pid: int) -> dict[str, int]:
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


def median_memory(samples: list[dict[str, int]]) -> dict[str, float]:
    return {k: percentile([s[k] for s in samples], 50) for k in ("rss", "pss", "uss")}


def execute(client: BlockingKernelClient, code: str) -> dict[str, Any]:
    """Run code: block on the shell reply, then read iopub until the kernel is idle again (no polling).

    Reads the channels' sockets directly (``channel.get_msg``: zmq poll + recv); the BlockingKernelClient's
    ``get_shell_msg``/``get_iopub_msg`` wrap async methods with ``run_sync`` and add ~1 ms per call, which
    would be client overhead rather than the kernel's. Returns the times to the reply and to idle, and what
    the code printed, displayed and returned."""
    t0 = time.perf_counter()
    msg_id = client.execute(code, store_history=True)
    while True:
        reply = client.shell_channel.get_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    t_reply = time.perf_counter()
    stdout, images, result = "", 0, None
    while True:
        msg = client.iopub_channel.get_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        if kind == "stream" and content["name"] == "stdout":
            stdout += content["text"]
        elif kind == "display_data" and "image/png" in content["data"]:
            images += 1
        elif kind == "execute_result":
            result = content["data"].get("text/plain")
    return {"reply_s": t_reply - t0, "idle_s": time.perf_counter() - t0, "status": reply["content"]["status"],
            "stdout": stdout, "images": images, "result": result}


class Kernel:
    def __init__(self, runtime: Path, index: int, env: dict[str, str]) -> None:
        self.manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(runtime / f"k{index}"),
                                     connection_file=str(runtime / f"k{index}.json"))
        self.env = env
        self.client: BlockingKernelClient | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        self.manager.start_kernel(env=self.env, cwd=self.env["HOME"])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=TIMEOUT)
        return time.perf_counter() - t0

    @property
    def pid(self) -> int:
        return int(self.manager.provisioner.process.pid)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kernels", type=int, help="kernels to start (default 5, quick 2)")
    parser.add_argument("--roundtrips", type=int, help="1+1 round trips per kernel (default 100, quick 50)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    n_kernels = args.kernels or (2 if args.quick else 5)
    n_rt = args.roundtrips or (50 if args.quick else 100)
    out: dict[str, Any] = {"kernels": n_kernels, "transport": "ipc"}
    samples: dict[str, list[float]] = {k: [] for k in ("ready", "ready_first_print", "first_print", "imports",
                                                       "plot_first", "plot_repeat", "roundtrip_reply",
                                                       "roundtrip_idle")}
    failures: list[str] = []
    memory_idle: list[dict[str, int]] = []
    kernels: list[Kernel] = []
    with tempfile.TemporaryDirectory(prefix="jupyter-bench-") as tmp:
        runtime, home = Path(tmp) / "run", Path(tmp) / "home"
        runtime.mkdir(mode=0o700)
        home.mkdir()
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
               "LANG": "C.UTF-8", "IPYTHONDIR": str(home / "ipython"), "MPLCONFIGDIR": str(home / "matplotlib"),
               "JUPYTER_RUNTIME_DIR": str(runtime), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)
        print(f"jupyter baseline: {n_kernels} kernels (ipykernel, {out['transport']} transport), "
              f"{n_rt} × 1+1 each; one warm-up kernel first", flush=True)
        warm = Kernel(runtime, 999, env)
        try:
            warm.start()
            assert warm.client is not None
            execute(warm.client, IMPORTS + "\n" + PLOT)
        finally:
            warm.stop()
        try:
            for i in range(n_kernels):
                kernel = Kernel(runtime, i, env)
                kernels.append(kernel)
                ready = kernel.start()
                client = kernel.client
                assert client is not None
                first = execute(client, "print(1)")
                time.sleep(0.2)
                memory_idle.append(smaps(kernel.pid))
                imports = execute(client, IMPORTS)
                plot = execute(client, PLOT)
                plot2 = execute(client, "plt.plot([1, 2, 3])")
                if first["stdout"] != "1\n" or imports["status"] != "ok" or not plot["images"] or not plot2["images"]:
                    failures.append(f"kernel {i}: {first['stdout']!r} {imports['status']} {plot['images']}")
                samples["ready"].append(ready)
                samples["first_print"].append(first["idle_s"])
                samples["ready_first_print"].append(ready + first["idle_s"])
                samples["imports"].append(imports["idle_s"])
                samples["plot_first"].append(plot["idle_s"])
                samples["plot_repeat"].append(plot2["idle_s"])
                for _ in range(5):
                    execute(client, "1+1")
                for _ in range(n_rt):
                    rt = execute(client, "1+1")
                    if rt["result"] != "2":
                        failures.append(f"kernel {i}: 1+1 gave {rt['result']!r}")
                    samples["roundtrip_reply"].append(rt["reply_s"])
                    samples["roundtrip_idle"].append(rt["idle_s"])
                print(f"  kernel {i}: ready {ready * 1000:.0f} ms, imports {imports['idle_s'] * 1000:.0f} ms, "
                      f"plot {plot['idle_s'] * 1000:.0f} ms", flush=True)
            time.sleep(0.5)
            memory_after = [smaps(k.pid) for k in kernels]
        finally:
            for kernel in kernels:
                kernel.stop()
    out |= {name: summary(values) for name, values in samples.items()}
    out["memory_idle"] = median_memory(memory_idle)
    out["memory_after"] = median_memory(memory_after)
    out["failures"] = failures

    print(f"\n{'jupyter kernel baseline':<44}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for key, label in (("ready", "start → ready"), ("ready_first_print", "start + first print(1)"),
                       ("imports", "import numpy, pandas, pyplot"), ("plot_first", "small plot → PNG (first)"),
                       ("plot_repeat", "small plot → PNG (repeat)"), ("roundtrip_reply", "1+1 → execute_reply"),
                       ("roundtrip_idle", "1+1 → iopub idle")):
        s = out[key]
        print(f"{label:<44}{s['n']:>5}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['max']:>9.2f}")
    for key, label in (("memory_idle", "memory idle after ready"),
                       ("memory_after", f"memory after imports + plot ({n_kernels} alive)")):
        m = out[key]
        print(f"{label:<44} PSS {m['pss'] / MIB:.1f} MiB, USS {m['uss'] / MIB:.1f} MiB, RSS {m['rss'] / MIB:.1f} MiB")
    print(f"failed checks: {len(failures)} {failures[:3] or ''}")
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
