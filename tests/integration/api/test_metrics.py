"""/metrics counts what the server did, in Prometheus's format, behind the API keys."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.api.server import Server, check_error, client, raw
from tests.upstream import ScriptedUpstream
from tests.waiting import until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_containers_executions_uploads_and_model_turns(tmp_path: Path,
                                                                     upstream: ScriptedUpstream) -> None:
    server = Server(tmp_path, CELLBOX_UPSTREAM_BASE_URL=upstream.url, CELLBOX_WARM_POOL="1").start()
    try:
        with client(server) as sdk, raw(server) as http:
            box = sdk.containers.create(name="m")
            sdk.containers.files.create(box.id, file=("a.txt", b"12345"))
            sdk.files.create(file=("b.txt", b"123"), purpose="user_data")
            assert http.post(f"/v1/containers/{box.id}/execute", json={"code": "1"}).status_code == 200
            assert http.post(f"/v1/containers/{box.id}/execute", json={"code": "1/0"}).status_code == 200
            upstream.script("metrics-model", {"text": "hi"})
            sdk.responses.create(model="metrics-model", input="hi")
            upstream.script("metrics-model", {"status": 400, "error": "unknown model"})
            assert http.post("/v1/responses", json={"model": "metrics-model", "input": "x"}).status_code == 400
            until(lambda: http.get("/health").json()["warm_pool"]["ready"] == 1, "the warm pool to refill")
            reply = http.get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain")
            got = samples(reply.text)
            assert got[("cellbox_containers_created_total", ())] == 1
            assert got[("cellbox_executions_total", (("status", "completed"),))] == 1
            assert got[("cellbox_executions_total", (("status", "failed"),))] == 1
            assert got[("cellbox_execution_seconds_count", ())] == 2
            assert got[("cellbox_uploads_total", ())] == 2
            assert got[("cellbox_upload_bytes_total", ())] == 8
            assert got[("cellbox_upstream_turns_total", ())] == 2
            assert got[("cellbox_upstream_errors_total", (("kind", "rejected"),))] == 1
            assert got[("cellbox_containers_live", ())] == 1  # handed out; the warm one is counted apart
            assert got[("cellbox_warm_pool_ready", ())] == 1
        check_error(httpx.get(server.url + "/metrics"), 401, "api key")
    finally:
        server.stop()
