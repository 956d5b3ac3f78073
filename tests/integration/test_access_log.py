"""The access log: one line per request with method, path, status, duration and project; nothing secret."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.api.server import Server, client, raw

SECRET_CODE = "print('code-that-must-not-be-logged')"
SECRET_CONTENT = b"file-content-that-must-not-be-logged"


def test_one_line_per_request_and_no_secrets(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_LOG_LEVEL="info").start()
    try:
        with client(server) as sdk:
            box = sdk.containers.create(name="logged")
            sdk.post(f"/containers/{box.id}/execute", body={"code": SECRET_CODE}, cast_to=object)
            sdk.containers.files.create(box.id, file=("notes.txt", SECRET_CONTENT))
        with raw(server) as http:
            http.get("/v1/containers", params={"name": "query-that-must-not-be-logged"})
        with raw(server, key="wrong-key-that-must-not-be-logged") as wrong:
            wrong.get("/v1/containers")
    finally:
        log = server.stop()
    access = [line for line in log.splitlines() if line.startswith("INFO cellbox.access: ")]
    pattern = re.compile(r"INFO cellbox\.access: (\w+) (\S+) (\d{3}) \d+\.\dms project=(\S+)")
    parsed = [pattern.fullmatch(line).groups() for line in access]  # type: ignore[union-attr]
    assert ("POST", "/v1/containers", "200", "project-a") in parsed
    assert ("POST", f"/v1/containers/{box.id}/execute", "200", "project-a") in parsed
    assert ("POST", f"/v1/containers/{box.id}/files", "200", "project-a") in parsed
    assert ("GET", "/v1/containers", "200", "project-a") in parsed
    assert ("GET", "/v1/containers", "401", "-") in parsed
    for secret in ("code-that-must-not-be-logged", SECRET_CONTENT.decode(), "query-that-must-not-be-logged",
                   "wrong-key-that-must-not-be-logged", "key-a"):
        assert secret not in log
