"""A real `cellbox serve` process on loopback, and clients that check every JSON body against OpenAI's spec."""

from __future__ import annotations

import collections
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai

from tests import openapi
from tests.waiting import until

KEYS = {"key-a": "project-a", "key-b": "project-b"}
SEED = ",".join(f"{k}={p}" for k, p in KEYS.items())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {"CELLBOX_API_KEYS": SEED, "CELLBOX_PRELOAD": '["numpy", "pandas", "matplotlib.pyplot"]', **env}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=20_000)  # lines, the newest kept
        self._reader: threading.Thread | None = None

    def _drain(self, stream: Any) -> None:
        """Read the server's stderr as it comes: a pipe nobody reads fills up (64 KiB), and the server's next log
        line then blocks its event loop, so every request hangs."""
        for line in iter(stream.readline, b""):
            self._stderr.append(line)

    def _collected(self) -> str:
        if self._reader is not None:
            self._reader.join(timeout=30)
            self._reader = None
        text = b"".join(self._stderr).decode(errors="replace")
        self._stderr.clear()
        return text

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cellbox.cli", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self._collected()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the server; returns what it wrote to stderr."""
        output = ""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            output = self._collected()
            if self.process.stderr is not None:
                self.process.stderr.close()
        self.process = None
        return output


def _check(response: httpx2.Response) -> None:
    """Every JSON body from an OpenAI path must match the schema the spec publishes for it."""
    request = response.request
    if "json" not in response.headers.get("content-type", ""):
        return
    try:
        openapi.spec_path(request.url.path)
    except AssertionError:
        return  # a Cellbox extension (e.g. /execute) or /health: not in OpenAI's spec
    response.read()
    openapi.validate(request.url.path, request.method, response.status_code, response.json())


async def _acheck(response: httpx2.Response) -> None:
    request = response.request
    if "json" not in response.headers.get("content-type", ""):
        return
    try:
        openapi.spec_path(request.url.path)
    except AssertionError:
        return
    await response.aread()
    openapi.validate(request.url.path, request.method, response.status_code, response.json())


def workspace_of(server: Server, cid: str) -> Path:
    """A container's /mnt/data as the host sees it (the tests run as root, like the server)."""
    with sqlite3.connect(server.data_dir / "cellbox.db") as db:
        (path,) = db.execute("SELECT workspace FROM containers WHERE id = ?", (cid,)).fetchone()
    return Path(path)


def started_auto_workspace(server: Server, response_id: str | None = None, marker: str = "started") -> Path:
    """The workspace of the auto container response ``response_id`` made (by default the newest one), once its
    code has written ``marker``. Name the response where an earlier test may have left a started one behind."""
    name = f"auto: {response_id}" if response_id else "auto: %"

    def find() -> Path | None:
        with sqlite3.connect(server.data_dir / "cellbox.db") as db:
            row = db.execute("SELECT workspace FROM containers WHERE name LIKE ? ORDER BY seq DESC LIMIT 1",
                             (name,)).fetchone()
        return Path(row[0]) if row and row[0] and (Path(row[0]) / marker).exists() else None
    return until(find, "the response's code to start")


def client(server: Server, key: str = "key-a", **kwargs: Any) -> openai.OpenAI:
    http = openai.DefaultHttpx2Client(event_hooks={"response": [_check]})
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, http_client=http, max_retries=0, **kwargs)


def async_client(server: Server, key: str = "key-a") -> openai.AsyncOpenAI:
    http = openai.DefaultAsyncHttpx2Client(event_hooks={"response": [_acheck]})
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, http_client=http, max_retries=0)


def raw(server: Server, key: str | None = "key-a") -> httpx.Client:
    """Plain HTTP for bad input the SDK would never send."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def check_error(response: httpx.Response, status: int, fragment: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    openapi.validate_error(body)
    assert fragment.lower() in body["error"]["message"].lower(), body
    return body["error"]
