"""Cellbox's execute extension: the same output items as the Responses API, plain or streamed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from cellbox.sandbox.frames import frame_ceiling
from tests.integration.api.server import check_error
from tests.security.helpers import FORGE


def test_outputs_are_logs_and_images(http: httpx.Client, container: str) -> None:
    code = "print('hi')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]);\n1 + 1"
    body = http.post(f"/v1/containers/{container}/execute", json={"code": code}).json()
    assert body["object"] == "container.execution"
    assert body["status"] == "completed"
    kinds = [o["type"] for o in body["outputs"]]
    assert kinds == ["logs", "image"]
    assert body["outputs"][0]["logs"] == "hi\n2\n"
    assert body["outputs"][1]["url"].startswith("data:image/png;base64,")


def test_state_persists_and_errors_are_reported(http: httpx.Client, container: str) -> None:
    http.post(f"/v1/containers/{container}/execute", json={"code": "x = 41"})
    assert http.post(f"/v1/containers/{container}/execute", json={"code": "x + 1"}).json()["outputs"] == [
        {"type": "logs", "logs": "42\n"}]
    failed = http.post(f"/v1/containers/{container}/execute", json={"code": "1/0"}).json()
    assert failed["status"] == "failed"
    assert "ZeroDivisionError" in failed["outputs"][0]["logs"]


def test_timeout(http: httpx.Client, container: str) -> None:
    body = http.post(f"/v1/containers/{container}/execute",
                     json={"code": "import time; time.sleep(30)", "timeout": 1}).json()
    assert body["status"] == "timeout"
    assert "timed out" in body["message"]


def test_streaming_sends_outputs_while_the_code_runs(http: httpx.Client, container: str) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint('second')"
    events = []
    with http.stream("POST", f"/v1/containers/{container}/execute", json={"code": code, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[0] == ("output", {"type": "logs", "logs": "first\n"})
    assert events[-1][0] == "done"
    assert events[-1][1]["outputs"] == [{"type": "logs", "logs": "first\nsecond\n"}]


def test_bad_execute_requests(http: httpx.Client, container: str) -> None:
    check_error(http.post(f"/v1/containers/{container}/execute", json={}), 400, "code")
    check_error(http.post(f"/v1/containers/{container}/execute", json={"code": "1", "timeout": -1}), 400, "timeout")
    check_error(http.post("/v1/containers/cntr_missing/execute", json={"code": "1"}), 404)
    check_error(http.post("/v1/containers/cntr_missing/execute", json={"code": "1", "stream": True}), 404)


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_frame_is_a_crashed_execution_not_a_server_error(http: httpx.Client, container: str,
                                                                     stream: bool) -> None:
    code = FORGE + 'forge({"type": "display", "data": {"image/png": 5}, "metadata": {}})'
    response = http.post(f"/v1/containers/{container}/execute", json={"code": code, "stream": stream})
    assert response.status_code == 200
    body = _final(response.text) if stream else response.json()
    assert body["status"] == "crashed"
    assert body["restarted"] is True
    assert "malformed message" in body["message"]
    after = http.post(f"/v1/containers/{container}/execute", json={"code": "1 + 1"}).json()
    assert (after["status"], after["outputs"]) == ("completed", [{"type": "logs", "logs": "2\n"}])


@pytest.mark.parametrize("code", [
    "from IPython.display import display\ndisplay({'text/plain': 'x' * (20 << 20)}, raw=True)",
    FORGE + 'for _ in range(10):\n    forge({"type": "display", "data": {"text/plain": "x" * 2 * MIB}})',
], ids=["one_display_of_20_mib", "ten_forged_displays_of_2_mib"])
def test_a_huge_display_comes_back_truncated_in_a_bounded_body(http: httpx.Client, container: str, code: str) -> None:
    response = http.post(f"/v1/containers/{container}/execute", json={"code": code})
    assert response.status_code == 200
    assert len(response.content) <= frame_ceiling(1 << 20) + 4096  # the server's default output limit, 1 MiB
    body = response.json()
    assert "[output truncated: " in body["outputs"][-1]["logs"]
    assert "truncated" in body["message"]
    assert body["restarted"] is False


def _final(text: str) -> dict[str, Any]:
    """The execution in a stream's ``done`` event."""
    lines = text.splitlines()
    done = lines.index("event: done")
    final: dict[str, Any] = json.loads(lines[done + 1].removeprefix("data: "))
    return final
