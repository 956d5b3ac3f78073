"""The same API on PostgreSQL: a real server started by the test run (tests/postgres.py)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.api.server import Server, client, raw
from tests.postgres import Postgres
from tests.upstream import ScriptedUpstream


@pytest.fixture(scope="module")
def postgres_url(postgres: Postgres) -> str:
    return postgres.database()


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
