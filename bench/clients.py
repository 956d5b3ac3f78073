"""Why the upstream client is aiohttp: the same requests through httpx and aiohttp, against one local server.
Run by hand from the repository root:

    .venv/bin/python bench/clients.py [--rounds 2000]

The server is a trivial ASGI app under the same uvicorn as `cellbox serve` (uvloop, httptools), on 127.0.0.1.
Each round, interleaved so drift hits every client alike:

  POST        a small chat-completions-sized JSON body; the JSON answer read and parsed
  stream      one POST whose answer is 300 server-sent events of a completion chunk each, read line by line
              (what a streamed model turn is to the Responses loop)

through httpx's AsyncClient (`post`, and `stream` + `aiter_lines`) and aiohttp's ClientSession (`post`, and
`content` line by line), each on a kept-alive connection. The server's share is the same for all, so the
differences are the clients' own. The ratio is to httpx's POST, the HTTP floor's client in bench/all.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop

from api import p99, trivial_server  # bench/api.py

CHUNKS = 300
CHUNK = "data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [
    {"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}) + "\n\n"
BODY = {"model": "m", "messages": [{"role": "user", "content": "Compute 1+1 with python."}], "stream": False}
APP = f"""
CHUNK = {CHUNK.encode()!r}
SSE = [(b"content-type", b"text/event-stream")]

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/stream":
        await send({{"type": "http.response.start", "status": 200, "headers": SSE}})
        for _ in range({CHUNKS}):
            await send({{"type": "http.response.body", "body": CHUNK, "more_body": True}})
        await send({{"type": "http.response.body", "body": b"data: [DONE]\\n\\n"}})
        return
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": b'{{"choices":[{{"message":{{"content":"2"}}}}]}}'}})
"""


def check(ok: bool, what: object) -> None:
    if not ok:
        raise RuntimeError(f"unexpected result: {what!r}"[:500])


async def measure(base: str, rounds: int) -> dict[str, list[float]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as hx, aiohttp.ClientSession(base) as ah:
        async def hx_post() -> None:
            check((await hx.post("/", json=BODY)).json()["choices"][0]["message"]["content"] == "2", "httpx")

        async def hx_stream() -> None:
            async with hx.stream("POST", "/stream", json=BODY) as reply:
                lines = [line async for line in reply.aiter_lines() if line.startswith("data:")]
            check(len(lines) == CHUNKS + 1, len(lines))

        async def ah_post() -> None:
            async with ah.post("/", json=BODY) as reply:
                check(json.loads(await reply.read())["choices"][0]["message"]["content"] == "2", "aiohttp")

        async def ah_stream() -> None:
            async with ah.post("/stream", json=BODY) as reply:
                lines = [raw async for raw in reply.content if raw.startswith(b"data:")]
            check(len(lines) == CHUNKS + 1, len(lines))

        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "httpx POST": hx_post, "aiohttp POST": ah_post, "httpx stream": hx_stream, "aiohttp stream": ah_stream}
        for _ in range(600):  # the server is up when a POST goes through
            try:
                await hx_post()
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for n in range(rounds + 50):
            for name, call in calls.items():
                if name.endswith("stream") and n % 10:
                    continue  # a stream is ~5x a POST: a tenth as many keeps the run short
                started = time.perf_counter()
                await call()
                if n >= 50:  # warm-up
                    samples[name].append(time.perf_counter() - started)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with trivial_server(APP) as base:
        samples = uvloop.run(measure(base, args.rounds))
    floor = statistics.median(samples["httpx POST"])
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<16} p50 {median * 1000:7.3f} ms  p99 {p99(values) * 1000:7.3f} ms  (n={len(values)})"
              f"  {median / floor:5.2f}x httpx POST")


if __name__ == "__main__":
    main()
