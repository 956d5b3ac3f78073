"""Objects changing under requests that use them: every request gets its one right answer, never a 5xx."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import openai

from tests.integration.api.server import Server, client, raw, workspace_of
from tests.upstream import ScriptedUpstream
from tests.waiting import until

WAIT = 120.0  # seconds: bounds for threads that finish well within one on a quiet machine


def test_deleting_a_container_while_uploads_to_it_are_in_flight(server: Server, sdk: openai.OpenAI) -> None:
    box = sdk.containers.create(name="doomed")
    results: list[tuple[int, str]] = []
    started = threading.Barrier(9)

    def upload(i: int) -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-a"}, timeout=120) as http:
            started.wait()
            response = http.post(f"/v1/containers/{box.id}/files", files={"file": (f"f{i}.bin", b"x" * 200_000)})
            results.append((response.status_code, response.text))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    sdk.containers.delete(box.id)
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 8
    assert {status for status, _ in results} <= {200, 404}, results
    assert not any("container_expired" in text for _, text in results)
    after = httpx.get(f"{server.url}/v1/containers/{box.id}/files", headers={"Authorization": "Bearer key-a"})
    assert after.status_code == 404


def _stream_until(http: httpx.Client, cid: str, code: str, marker: str, then) -> list[str]:
    """Stream an execution; once ``marker`` is printed, call ``then()``; return every SSE data line."""
    lines: list[str] = []
    with http.stream("POST", f"/v1/containers/{cid}/execute", json={"code": code, "stream": True, "timeout": 300},
                     timeout=300) as response:
        assert response.status_code == 200
        called = False
        for line in response.iter_lines():
            lines.append(line)
            if marker in line and not called:
                called = True
                then()
    return lines


def test_deleting_a_container_while_its_code_runs_ends_the_execution(server: Server, sdk: openai.OpenAI,
                                                                      http: httpx.Client) -> None:
    box = sdk.containers.create(name="busy")
    code = "open('/mnt/data/partial.txt', 'w').write('x')\nprint('started', flush=True)\nimport time\ntime.sleep(300)"
    lines = _stream_until(http, box.id, code, "started", lambda: sdk.containers.delete(box.id))
    done = [line for line in lines if '"container.execution"' in line]
    assert len(done) == 1
    assert '"status":"crashed"' in done[0]
    assert "The container was deleted or expired while the code ran." in done[0]
    again = http.post(f"/v1/containers/{box.id}/execute", json={"code": "1"})
    assert again.status_code == 404


def test_two_executions_on_one_container_run_one_after_the_other(server: Server, sdk: openai.OpenAI,
                                                                 http: httpx.Client) -> None:
    """The second waits for the first: it only starts after the first saw the go-ahead file and finished."""
    box = sdk.containers.create(name="queue")
    second: dict[str, object] = {}

    def send_second_then_go() -> None:
        def run() -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer key-a"}, timeout=300) as other:
                second["body"] = other.post(f"/v1/containers/{box.id}/execute",
                                            json={"code": "print(open('/mnt/data/order.txt').read())"}).json()
        thread = threading.Thread(target=run)
        thread.start()
        second["thread"] = thread
        sdk.containers.files.create(box.id, file=("go.txt", b"go"))

    code = """
import os, time
print('first started', flush=True)
while not os.path.exists('/mnt/data/go.txt'):
    time.sleep(0.01)
with open('/mnt/data/order.txt', 'w') as f:
    f.write('first finished')
"""
    _stream_until(http, box.id, code, "first started", send_second_then_go)
    second["thread"].join(timeout=300)  # type: ignore[attr-defined]
    assert second["body"]["status"] == "completed"  # type: ignore[index]
    assert second["body"]["outputs"] == [{"type": "logs", "logs": "first finished\n"}]  # type: ignore[index]
    sdk.containers.delete(box.id)


def test_a_download_under_way_when_its_container_is_deleted_gets_every_byte(server: Server, sdk: openai.OpenAI,
                                                                           http: httpx.Client) -> None:
    """The file was opened before the delete: the download finishes with what it opened; later ones are 404s."""
    box = sdk.containers.create(name="download")
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    file = sdk.containers.files.create(box.id, file=("big.bin", data))
    received = b""
    with http.stream("GET", f"/v1/containers/{box.id}/files/{file.id}/content") as response:
        assert response.status_code == 200
        chunks = response.iter_bytes(65536)
        received += next(chunks)
        sdk.containers.delete(box.id)
        for chunk in chunks:
            received += chunk
    assert received == data
    assert http.get(f"/v1/containers/{box.id}/files/{file.id}/content").status_code == 404


def test_a_container_running_code_does_not_expire_and_its_idle_clock_restarts_after(tmp_path: Path) -> None:
    """Running code is activity however long it lasts. Both containers are idle past their expiry on paper;
    only the one not running code expires, and the busy one's idle clock starts again when its code ends."""
    server = Server(tmp_path, CELLBOX_REAPER_INTERVAL="0.2").start()
    try:
        with client(server) as sdk:
            minute = {"anchor": "last_active_at", "minutes": 1}
            busy = sdk.containers.create(name="busy", expires_after=minute)
            idle = sdk.containers.create(name="idle", expires_after=minute)
            started, go = workspace_of(server, busy.id) / "started", workspace_of(server, busy.id) / "go"
            code = ("import os, time\nopen('/mnt/data/started', 'w').close()\nprint('started', flush=True)\n"
                    "while not os.path.exists('/mnt/data/go'):\n    time.sleep(0.01)\nprint('finished')")
            result: dict[str, object] = {}

            def run() -> None:
                with raw(server) as other:
                    result["body"] = other.post(f"/v1/containers/{busy.id}/execute",
                                                json={"code": code, "timeout": 600}, timeout=600).json()

            runner = threading.Thread(target=run)
            runner.start()
            until(started.exists, "the code to start")
            with sqlite3.connect(server.data_dir / "cellbox.db") as db:  # one statement: one sweep sees both
                db.execute("UPDATE containers SET last_active_at = last_active_at - 61 WHERE id IN (?, ?)",
                           (busy.id, idle.id))
            until(lambda: sdk.containers.retrieve(idle.id).status == "expired", "the idle container to expire")
            assert sdk.containers.retrieve(busy.id).status == "running"
            released = int(time.time())
            go.write_text("go")  # from the host: an upload would count as activity and prove nothing
            runner.join(timeout=WAIT)
            body = result["body"]
            assert body["status"] == "completed", body  # type: ignore[index]
            assert body["outputs"] == [{"type": "logs", "logs": "started\nfinished\n"}]  # type: ignore[index]
            after = sdk.containers.retrieve(busy.id)
            assert after.status == "running"
            assert after.last_active_at >= released  # restarted when the code ended, not left 61 s in the past
    finally:
        server.stop()


def test_a_response_whose_container_is_deleted_mid_run_says_so(server: Server, sdk: openai.OpenAI,
                                                                upstream: ScriptedUpstream, model: str) -> None:
    """The call that was running reports the deletion to the model; the next call can't run, so the response
    fails with a clear error, and nothing comes back to life."""
    box = sdk.containers.create(name="shared")
    started = workspace_of(server, box.id) / "started"
    upstream.script(model, {"code": "open('/mnt/data/started', 'w').close()\nimport time\ntime.sleep(300)"},
                    {"code": "print('again')"}, {"text": "never sent"})
    answer: dict[str, object] = {}

    def respond() -> None:
        with client(server) as other:
            answer["response"] = other.responses.create(
                model=model, input="go", tools=[{"type": "code_interpreter", "container": box.id}],
                include=["code_interpreter_call.outputs"])

    thread = threading.Thread(target=respond)
    thread.start()
    until(started.exists, "the code to start")
    sdk.containers.delete(box.id)
    thread.join(timeout=WAIT)
    response = answer["response"]
    assert response.status == "failed"  # type: ignore[attr-defined]
    assert f"Container with id '{box.id}' not found" in response.error.message  # type: ignore[attr-defined]
    first, second = response.output  # type: ignore[attr-defined]
    assert first.status == "failed"
    assert "deleted or expired while the code ran" in first.outputs[0].logs
    assert second.status == "failed"
    told = upstream.requests(model)[1]["messages"][-1]["content"]
    assert "deleted or expired while the code ran" in told
    assert upstream.remaining(model) == 1
    assert http_status(server, f"/v1/containers/{box.id}") == 404


def http_status(server: Server, path: str) -> int:
    with raw(server) as http:
        return http.get(path).status_code
