"""`cellbox serve` as a daemon: it says "starting" then "serving" once it accepts requests, fails in one line,
and SIGINT or SIGTERM stop it quietly, interrupting running code and reaping every container process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.api.server import free_port

ENV = {**os.environ, "CELLBOX_PRELOAD": "[]", "CELLBOX_WARM_POOL": "1"}


def _serve(data_dir: Path, port: int, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen([*prefix, sys.executable, "-m", "cellbox.cli", "serve", "--port", str(port),
                             "--data-dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            continue
        found.update(kids)
        todo.extend(kids)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """A server, with the lines it printed up to "serving"."""
    port = free_port()
    process = _serve(tmp_path / "data", port)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line.rstrip("\n"))
        if "serving" in line:
            break
    yield process, f"http://127.0.0.1:{port}", lines
    if process.poll() is None:
        process.terminate()  # a clean stop unmounts the workspace volumes under tmp_path
        process.wait(timeout=120)
    process.stderr.close()


def test_it_says_starting_then_serving_once_requests_are_accepted(started) -> None:
    _, url, lines = started
    assert lines[0].startswith("cellbox: starting (data directory ")
    assert lines[-1].startswith(f"cellbox: serving {url}/v1 with open local mode")
    assert httpx.get(url + "/health", timeout=30).status_code == 200  # at once: no retry needed


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_it_quietly_interrupting_running_code(started, sig: signal.Signals) -> None:
    process, url, _ = started
    container = httpx.post(url + "/v1/containers", json={"name": "busy"}, timeout=60).json()["id"]
    answer: dict[str, httpx.Response] = {}

    def execute() -> None:
        code = "print('running', flush=True)\nimport time\ntime.sleep(600)"
        with httpx.stream("POST", f"{url}/v1/containers/{container}/execute", json={"code": code, "stream": True},
                          timeout=120) as response:
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                if "running" in line and "signalled" not in answer:
                    answer["signalled"] = response
                    process.send_signal(sig)
            answer["lines"] = lines  # type: ignore[assignment]

    processes = _descendants(process.pid)
    assert processes, "the server has no template or container processes"
    thread = threading.Thread(target=execute)
    thread.start()
    thread.join(timeout=120)
    assert process.wait(timeout=120) == 0
    rest = [line for line in process.stderr.read().splitlines()  # type: ignore[union-attr]
            if not line.startswith("INFO cellbox.access: ")]
    assert rest == ["cellbox: stopping: interrupting running code, then stopping every container"]
    assert "KeyboardInterrupt" in "\n".join(answer["lines"])  # type: ignore[arg-type]
    assert [pid for pid in processes if _alive(pid)] == []


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve(tmp_path / "data", port)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert err == f"cellbox: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_a_database_a_newer_release_migrated_is_one_line_and_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "cellbox.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999_future')")
    process = _serve(data, free_port())
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3
    assert err == ("cellbox: cannot open the database: the database's schema is at revision '9999_future', which "
                   "this Cellbox does not know: a newer release migrated it; run that release (or newer)\n")
    with sqlite3.connect(data / "cellbox.db") as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("alembic_version",)]


def test_without_root_it_is_one_line_and_status_3() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="cellbox-nonroot-"))
    try:
        os.chmod(data_dir, 0o777)
        # setpriv changes the uid and keeps the capabilities, so this Python (under /root here) can still start.
        nobody = ("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups")
        process = _serve(data_dir / "data", free_port(), nobody)
        _, err = process.communicate(timeout=120)
    finally:
        shutil.rmtree(data_dir)
    assert process.returncode == 3
    lines = err.strip().splitlines()
    assert lines[0].startswith("cellbox: starting")
    assert lines[1].startswith("cellbox: cannot start the sandbox: Cellbox's sandbox must start as root")
    assert len(lines) == 2
