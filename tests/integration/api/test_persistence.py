"""Restarts lose no file and no metadata; idle containers expire; the README's snippet runs as written."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.api.server import Server, check_error, client, raw
from tests.waiting import until

README = Path(__file__).parents[3] / "README.md"


def execute(http: httpx.Client, cid: str, code: str) -> dict:
    return http.post(f"/v1/containers/{cid}/execute", json={"code": code}).json()


def test_a_restart_keeps_files_and_metadata(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        with client(server) as sdk, raw(server) as http:
            upload = sdk.files.create(file=("kept.txt", b"kept bytes"), purpose="assistants")
            box = sdk.containers.create(name="survivor", file_ids=[upload.id])
            execute(http, box.id, "x = 1\nopen('made.txt', 'w').write('made by code')")
        server.stop()
        server.start()
        with client(server) as sdk, raw(server) as http:
            assert sdk.files.content(upload.id).read() == b"kept bytes"
            again = sdk.containers.retrieve(box.id)
            assert (again.name, again.status) == ("survivor", "running")
            paths = {f.path for f in sdk.containers.files.list(box.id)}
            assert paths == {"/mnt/data/kept.txt", "/mnt/data/made.txt"}
            result = execute(http, box.id, "print(open('made.txt').read())\n'x' in globals()")
            assert result["outputs"] == [{"type": "logs", "logs": "made by code\nFalse\n"}]  # files yes, state no
    finally:
        server.stop()


def test_a_crashed_server_comes_back_too(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        with client(server) as sdk, raw(server) as http:
            box = sdk.containers.create(name="crash")
            execute(http, box.id, "open('f.txt', 'w').write('f')")
        server.stop(sig=9)
        server.start()
        with raw(server) as http:
            assert execute(http, box.id, "print(open('f.txt').read())")["outputs"][0]["logs"] == "f\n"
        # The crashed server's warm pool and spares were never handed out: only this container's volume is kept.
        assert len(list((tmp_path / "workspaces").glob("vol-*.claimed"))) == 1
    finally:
        server.stop()


def test_idle_containers_expire_and_keep_their_metadata(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_REAPER_INTERVAL="0.2").start()
    try:
        with client(server) as sdk, raw(server) as http:
            box = sdk.containers.create(name="short", expires_after={"anchor": "last_active_at", "minutes": 1})
            file = sdk.containers.files.create(box.id, file=("a.txt", b"a"))
            _age(server, box.id, seconds=61)
            until(lambda: sdk.containers.retrieve(box.id).status == "expired", "the reaper", pause=0.2)
            check_error(http.post(f"/v1/containers/{box.id}/execute", json={"code": "1"}), 400, "expired")
            check_error(http.get(f"/v1/containers/{box.id}/files/{file.id}/content"), 400, "expired")
            with pytest.raises(openai.BadRequestError):
                sdk.containers.files.create(box.id, file=("b.txt", b"b"))
            assert sdk.containers.delete(box.id) is None
    finally:
        server.stop()


def _age(server: Server, cid: str, seconds: int) -> None:
    """Pretend the container has been idle: move its last activity into the past (the clock is the test's)."""
    with sqlite3.connect(server.data_dir / "cellbox.db") as db:
        db.execute("UPDATE containers SET last_active_at = last_active_at - ? WHERE id = ?", (seconds, cid))


def test_the_readme_snippet_runs_as_written(tmp_path: Path) -> None:
    snippet = re.search(r"```python\n(from openai import OpenAI\n[^`]*?containers\.create[^`]*)```", README.read_text())
    assert snippet is not None
    server = Server(tmp_path, CELLBOX_API_KEYS="").start()
    try:
        code = snippet.group(1).replace("http://127.0.0.1:8000", server.url)
        printed: list[str] = []
        exec(code, {"print": lambda *a: printed.append(" ".join(map(str, a)))})
        assert printed == ["[{'type': 'logs', 'logs': '2\\n'}]"]
    finally:
        server.stop()
