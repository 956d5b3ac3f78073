"""What `POST /v1/responses` itself adds per code_interpreter tool turn, net of the model's and the code's time.
Run by hand from the repository root:

    .venv/bin/python bench/responses.py [--iterations 200] [--warmup 20] [--stream] [--no-store]

Setup: the scripted model server of the tests (tests/upstream.py, it answers instantly from a queue) and a real
`cellbox serve`, both on 127.0.0.1; one container, created up front and named in every request's tool, so no
response pays for a container create (an `auto` container would add one create, see bench/api.py).

Each iteration measures, interleaved so drift hits every figure alike:

  full      `responses.create` with the OpenAI SDK, end to end, for a response whose script is one tool call
            running `1` then the text "Done."  (two upstream completions + one execution + Cellbox)
  full/raw  the same response as one plain httpx POST, to show what the SDK's own parsing costs
  text      `responses.create` (SDK) of a response with zero tool turns: the script is just the text
            (one upstream completion + Cellbox), with the same tool declared so the requests are alike
  text/raw  the same zero-turn response as one plain httpx POST: what the server costs, without the SDK's
            parsing (the HTTP floor of bench/all.py is an httpx POST too, so this is the figure it compares)
  up1, up2  the two chat completions of `full` sent straight to the scripted upstream by httpx: the exact
            request bodies Cellbox sent it (captured after the warm-up), so the sizes are identical
  execute   `POST /v1/containers/{id}/execute` of `1` in the same container: the code's time, *including* one
            HTTP round trip to Cellbox (the engine alone is faster, see bench/engine.py)

Derived, from the medians (p50s of independent samples do not subtract exactly; the "paired" figures take
each iteration's own difference and report its p50 and p99, which carries the noise of every term):

  added per response with one tool turn  = full - up1 - up2 - execute
  fixed per response (no tool turn)      = text - up1  (and text/raw - up1)
  added per tool turn (marginal)         = full - text - up2 - execute

Because `execute` includes an HTTP round trip that the response loop does not make, the first and last figures
understate Cellbox's time by about that round trip's HTTP share. Nothing here leaves loopback.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: tests/ holds the stand-in
from tests.upstream import ScriptedUpstream

from api import p99, percentiles, start_server  # bench/api.py: the same server and figures

TOOL_MODEL = "bench-tool"
TEXT_MODEL = "bench-text"
DIRECT_MODEL = "bench-direct"
CODE = "1"
TEXT = "Done."


def check(ok: bool, what: object) -> None:
    """A benchmark of wrong answers measures nothing: stop (plain `assert` would vanish under -O)."""
    if not ok:
        raise RuntimeError(f"unexpected result: {what!r}"[:2000])


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


class Bench:
    def __init__(self, base: str, upstream: ScriptedUpstream, stream: bool, store: bool) -> None:
        self.upstream = upstream
        self.stream = stream
        self.store = store
        self.http = httpx.Client(base_url=base, timeout=120)
        self.direct = httpx.Client(timeout=120)
        self.sdk = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
        created = self.http.post("/v1/containers", json={"name": "bench-responses"})
        created.raise_for_status()
        self.container = str(created.json()["id"])
        self.tools: list[Any] = [{"type": "code_interpreter", "container": self.container}]
        self.bodies: list[dict[str, Any]] = []

    def close(self) -> None:
        self.http.delete(f"/v1/containers/{self.container}")
        self.sdk.close()
        self.http.close()
        self.direct.close()

    def _sdk_response(self, model: str) -> Callable[[], None]:
        def run() -> None:
            if self.stream:
                events = self.sdk.responses.create(model=model, input="Compute.", tools=self.tools,
                                                   store=self.store, stream=True)
                kinds = [event.type for event in events]
                check(kinds[-1] == "response.completed", kinds)
            else:
                response = self.sdk.responses.create(model=model, input="Compute.", tools=self.tools,
                                                     store=self.store)
                check(response.status == "completed" and response.output_text == TEXT, response)
        return run

    def _raw_response(self, model: str = TOOL_MODEL) -> None:
        body = {"model": model, "input": "Compute.", "tools": self.tools, "store": self.store,
                "stream": self.stream}
        with self.http.stream("POST", "/v1/responses", json=body) as reply:
            data = reply.read()
        check(reply.status_code == 200, data[-500:])
        check(b"event: response.completed" in data if self.stream else reply.json()["status"] == "completed", data)

    def text_raw(self) -> float:
        self.upstream.script(TEXT_MODEL, {"text": TEXT})
        return timed(lambda: self._raw_response(TEXT_MODEL))

    def full(self) -> float:
        self.upstream.script(TOOL_MODEL, {"code": CODE}, {"text": TEXT})
        return timed(self._sdk_response(TOOL_MODEL))

    def full_raw(self) -> float:
        self.upstream.script(TOOL_MODEL, {"code": CODE}, {"text": TEXT})
        return timed(self._raw_response)

    def text(self) -> float:
        self.upstream.script(TEXT_MODEL, {"text": TEXT})
        return timed(self._sdk_response(TEXT_MODEL))

    def capture(self) -> None:
        """The two upstream request bodies of one `full` response, replayed as the direct baseline."""
        self.upstream.clear(TOOL_MODEL)
        self.full()
        sent = self.upstream.requests(TOOL_MODEL)
        check(len(sent) == 2 and self.upstream.remaining(TOOL_MODEL) == 0, sent)
        self.bodies = [{**body, "model": DIRECT_MODEL} for body in sent]
        self.upstream.clear(TOOL_MODEL)

    def _completion(self, body: dict[str, Any]) -> None:
        with self.direct.stream("POST", self.upstream.url + "/chat/completions", json=body) as reply:
            data = reply.read()
            check(reply.status_code == 200, data)
            check(not body.get("stream") or data.rstrip().endswith(b"data: [DONE]"), data[-200:])

    def upstream_pair(self) -> tuple[float, float]:
        self.upstream.script(DIRECT_MODEL, {"code": CODE}, {"text": TEXT})
        return timed(lambda: self._completion(self.bodies[0])), timed(lambda: self._completion(self.bodies[1]))

    def execute(self) -> float:
        def run() -> None:
            reply = self.http.post(f"/v1/containers/{self.container}/execute", json={"code": CODE})
            check(reply.status_code == 200 and reply.json()["outputs"] == [{"type": "logs", "logs": "1\n"}],
                  reply.text)
        return timed(run)


def report(samples: dict[str, list[float]]) -> None:
    labels = {
        "full": "full: 1 tool turn, SDK responses.create",
        "full_raw": "full: 1 tool turn, raw httpx POST",
        "text": "text: 0 tool turns, SDK responses.create",
        "text_raw": "text: 0 tool turns, raw httpx POST",
        "up1": "upstream completion 1 (direct httpx)",
        "up2": "upstream completion 2 (direct httpx)",
        "execute": "execute `1` via HTTP (incl. HTTP overhead)",
    }
    for key, label in labels.items():
        print(f"  {label:44s} {percentiles(samples[key])}")
    med = {key: statistics.median(values) for key, values in samples.items()}
    n = len(samples["full"])
    derived = {
        "added per response with one tool turn  = full - up1 - up2 - execute": (
            med["full"] - med["up1"] - med["up2"] - med["execute"],
            [samples["full"][i] - samples["up1"][i] - samples["up2"][i] - samples["execute"][i] for i in range(n)]),
        "fixed per response (no tool turn)      = text - up1": (
            med["text"] - med["up1"], [samples["text"][i] - samples["up1"][i] for i in range(n)]),
        "fixed per response, raw HTTP          = text/raw - up1": (
            med["text_raw"] - med["up1"], [samples["text_raw"][i] - samples["up1"][i] for i in range(n)]),
        "ADDED PER TOOL TURN (marginal)         = full - text - up2 - execute": (
            med["full"] - med["text"] - med["up2"] - med["execute"],
            [samples["full"][i] - samples["text"][i] - samples["up2"][i] - samples["execute"][i]
             for i in range(n)]),
    }
    print("derived (from the p50s; paired = per-iteration differences, noisier):")
    for label, (from_medians, paired) in derived.items():
        print(f"  {label}  {from_medians * 1000:7.2f} ms   paired p50 {statistics.median(paired) * 1000:7.2f} ms"
              f"  p99 {p99(paired) * 1000:7.2f} ms")
    print(f"  SDK parsing share of `full`: {(med['full'] - med['full_raw']) * 1000:.2f} ms (p50 full - p50 raw)")
    print("  note: `execute` includes an HTTP round trip the response loop does not make, so the figures that "
          "subtract it understate Cellbox's time by about that much")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--stream", action="store_true", help="stream the responses (and the upstream)")
    parser.add_argument("--no-store", action="store_true", help="store=false: no response history written")
    args = parser.parse_args()
    print(f"cellbox responses benchmark: {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, stream={args.stream}, store={not args.no_store}, "
          f"{args.iterations} iterations after {args.warmup} warm-up")
    upstream = ScriptedUpstream().start()
    with tempfile.TemporaryDirectory(prefix="cellbox-bench-") as data:
        try:
            server, base = start_server(data, CELLBOX_UPSTREAM_BASE_URL=upstream.url)
        except BaseException:
            upstream.stop()
            raise
        try:
            bench = Bench(base, upstream, args.stream, not args.no_store)
            try:
                bench.capture()
                for _ in range(args.warmup):
                    bench.full()
                    bench.full_raw()
                    bench.text()
                    bench.text_raw()
                    bench.upstream_pair()
                    bench.execute()
                samples: dict[str, list[float]] = {k: [] for k in ("full", "full_raw", "text", "text_raw", "up1",
                                                                    "up2", "execute")}
                for _ in range(args.iterations):
                    samples["full"].append(bench.full())
                    samples["full_raw"].append(bench.full_raw())
                    samples["text"].append(bench.text())
                    samples["text_raw"].append(bench.text_raw())
                    up1, up2 = bench.upstream_pair()
                    samples["up1"].append(up1)
                    samples["up2"].append(up2)
                    samples["execute"].append(bench.execute())
                    for model in (TOOL_MODEL, TEXT_MODEL, DIRECT_MODEL):  # keep the logs from growing
                        upstream.clear(model)
                report(samples)
            finally:
                bench.close()
        finally:
            server.terminate()
            server.wait(60)
            upstream.stop()


if __name__ == "__main__":
    main()
