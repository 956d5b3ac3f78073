"""The same API on PostgreSQL: a real server started by the test run (initdb in a temporary directory)."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.api.server import Server, client, free_port, raw
from tests.upstream import ScriptedUpstream


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"PostgreSQL's {name} is missing: `scripts/system-packages --test` installs the postgresql package"
    return found[-1]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    home = Path(tempfile.mkdtemp(prefix="cellbox-pg-", dir="/tmp"))
    shutil.chown(home, "postgres", "postgres")
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, _bin("initdb"), "-D", str(home / "data"), "-A", "trust", "-U", "cellbox"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([*as_postgres, _bin("postgres"), "-D", str(home / "data"), "-k", str(home),
                               "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            ready = subprocess.run([_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cellbox", "cellbox"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://cellbox@127.0.0.1:{port}/cellbox"
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def test_files_containers_and_restart_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_DATABASE_URL=postgres_url).start()
    try:
        with client(server) as sdk, raw(server) as http:
            upload = sdk.files.create(file=("pg.csv", b"a\n1\n"), purpose="assistants")
            boxes = [sdk.containers.create(name="pg", file_ids=[upload.id]) for _ in range(3)]
            assert [c.id for c in sdk.containers.list(name="pg", limit=1, order="asc")] == [b.id for b in boxes]
            run = http.post(f"/v1/containers/{boxes[0].id}/execute", json={"code": "open('o.txt','w').write('o')"})
            assert run.json()["files"][0]["path"] == "/mnt/data/o.txt"
        server.stop()
        server.start()
        with client(server) as sdk, client(server, "key-b") as other:
            assert {f.path for f in sdk.containers.files.list(boxes[0].id)} == {"/mnt/data/pg.csv", "/mnt/data/o.txt"}
            assert sdk.containers.retrieve(boxes[0].id).status == "running"
            assert [c.id for c in other.containers.list()] == []
            for box in boxes:
                sdk.containers.delete(box.id)
    finally:
        server.stop()


def test_responses_are_stored_and_continued_on_postgres(postgres_url: str, tmp_path: Path,
                                                        upstream: ScriptedUpstream) -> None:
    server = Server(tmp_path, CELLBOX_DATABASE_URL=postgres_url, CELLBOX_UPSTREAM_BASE_URL=upstream.url).start()
    model = "pg-model"
    upstream.script(model, {"code": "k = 'v'"}, {"text": "Set."}, {"code": "print(k)"}, {"text": "It is v."})
    try:
        with client(server) as sdk:
            tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
            first = sdk.responses.create(model=model, tools=tools, input="set k", metadata={"db": "pg"})
            server.stop()
            server.start()  # the history survives a restart; the container comes back without its Python state
            assert sdk.responses.retrieve(first.id).metadata == {"db": "pg"}
            second = sdk.responses.create(model=model, tools=tools, input="print k", previous_response_id=first.id,
                                          include=["code_interpreter_call.outputs"])
            assert second.output[0].container_id == first.output[0].container_id
            assert "NameError" in second.output[0].outputs[0].logs
            assert [i.type for i in sdk.responses.input_items.list(second.id).data] == ["message"]
            assert upstream.requests(model)[2]["messages"][0] == {"role": "user", "content": "set k"}
            sdk.responses.delete(first.id)
            with pytest.raises(openai.NotFoundError):
                sdk.responses.retrieve(first.id)
            assert sdk.responses.retrieve(second.id).status == "completed"
    finally:
        server.stop()
