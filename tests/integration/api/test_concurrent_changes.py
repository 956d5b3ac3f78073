"""Objects changing under requests that use them: every request gets its one right answer, never a 5xx."""

from __future__ import annotations

import threading

import httpx
import openai

from tests.integration.api.server import Server


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
    code = "print('started', flush=True)\nimport time\ntime.sleep(300)"
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
