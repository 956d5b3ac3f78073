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
