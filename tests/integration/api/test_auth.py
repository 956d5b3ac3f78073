"""Keys, projects, open local mode and the rate limit."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.api.server import Server, check_error, client, raw
from tests.waiting import until


def test_missing_or_wrong_keys_are_401(server: Server) -> None:
    with raw(server, key=None) as anonymous:
        check_error(anonymous.get("/v1/containers"), 401, "api key")
    with raw(server, key="wrong") as wrong:
        check_error(wrong.get("/v1/containers"), 401, "incorrect api key")
    with client(server, "wrong") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.containers.list()


def test_keys_created_by_the_cli_work_at_once_and_are_stored_hashed(server: Server) -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "keys", "create", "--project", "project-a",
                           "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    with client(server, key) as sdk:
        sdk.containers.list()
    assert key.encode() not in (server.data_dir / "cellbox.db").read_bytes()


def test_open_local_mode_without_keys(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_API_KEYS="").start()
    try:
        with raw(server, key=None) as anonymous:
            assert anonymous.get("/v1/containers").status_code == 200
            assert "open" in anonymous.get("/health").json()["auth"]
    finally:
        server.stop()


def test_open_mode_answers_only_requests_addressed_to_a_loopback_name(tmp_path: Path) -> None:
    """A page elsewhere that rebinds its own name to 127.0.0.1 sends that name as Host: refused, on every path."""
    server = Server(tmp_path, CELLBOX_API_KEYS="").start()
    try:
        with raw(server, key=None) as anonymous:
            for host in (f"127.0.0.1:{server.port}", "localhost", "LocalHost.:80", "app.localhost", "[::1]:8000",
                         "127.8.9.10"):
                assert anonymous.get("/v1/containers", headers={"Host": host}).status_code == 200, host
            for host in ("rebound.example", f"rebound.example:{server.port}", "127.0.0.1.rebound.example",
                         "localhost.rebound.example", "[::2]", "10.0.0.1", "0.0.0.0"):
                for path in ("/v1/containers", "/", "/health", "/mcp"):
                    check_error(anonymous.get(path, headers={"Host": host}), 403, "open local mode")
            refused = anonymous.post("/v1/containers", json={"name": "x"}, headers={"Host": "rebound.example"})
            check_error(refused, 403, "addressed to 'rebound.example'")
            assert anonymous.get("/v1/containers").json()["data"] == []  # nothing was made
    finally:
        server.stop()


def test_open_mode_refuses_what_other_sites_pages_send(tmp_path: Path) -> None:
    """CSRF: a page elsewhere may make the browser post a form (a file upload) to 127.0.0.1, a "simple" request
    needing no preflight; the browser names the page's origin, and open mode refuses it."""
    server = Server(tmp_path, CELLBOX_API_KEYS="").start()
    try:
        with raw(server, key=None) as anonymous:
            own = f"http://127.0.0.1:{server.port}"
            for origin in ("https://evil.example", "null", f"http://127.0.0.1:{server.port + 1}"):
                refused = anonymous.post("/v1/files", headers={"Origin": origin},
                                         files={"file": ("x.txt", b"planted")}, data={"purpose": "user_data"})
                check_error(refused, 403, "only from its own pages")
            assert anonymous.get("/v1/files").json()["data"] == []  # nothing was made
            made = anonymous.post("/v1/files", headers={"Origin": own}, files={"file": ("x.txt", b"mine")},
                                  data={"purpose": "user_data"})
            assert made.status_code == 200, made.text  # the playground's own requests
            assert anonymous.get("/v1/files").status_code == 200  # and clients that send no Origin
    finally:
        server.stop()


def test_with_keys_any_host_name_may_reach_the_server(http: httpx.Client) -> None:
    assert http.get("/v1/containers", headers={"Host": "cellbox.internal.example"}).status_code == 200


def test_refuses_to_bind_beyond_loopback_without_keys(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "serve", "--host", "0.0.0.0", "--port", "1",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CELLBOX_API_KEYS": ""})
    assert done.returncode == 2
    assert "without API keys" in done.stderr


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_RATE_LIMIT="3").start()
    try:
        with raw(server) as http:
            statuses = [http.get("/v1/containers").status_code for _ in range(4)]
            assert statuses[:3] == [200, 200, 200]
            limited = http.get("/v1/containers")
            check_error(limited, 429, "rate limit")
            assert int(limited.headers["retry-after"]) > 0
        with raw(server, key="key-b") as other:
            assert other.get("/v1/containers").status_code == 200  # limits are per key
    finally:
        server.stop()


def test_health_reports_isolation(server: Server) -> None:
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok"
    assert health["isolation"]["mode"] == "strict"
    assert "network" in health["isolation"]["namespaces"]
    assert health["isolation"]["socket_families"] == ["AF_UNIX", "AF_INET", "AF_INET6",
                                                      "AF_NETLINK (NETLINK_ROUTE only)"]
    assert health["isolation"]["terminal"] == "none (a session of its own, no controlling tty)"
    assert health["isolation"]["init"] == "not dumpable"
    assert health["isolation"]["uid"] == "100000-165535 (one per container)"
    assert health["warm_pool"]["size"] == 2
    assert 0 <= health["warm_pool"]["ready"] <= 2  # other tests' creates take from it meanwhile


def test_in_open_mode_new_headers_buy_no_new_rate_budget(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_API_KEYS="", CELLBOX_RATE_LIMIT="3").start()
    try:
        statuses = []
        for i in range(4):
            with raw(server, key=f"random-{i}") as http:
                statuses.append(http.get("/v1/containers").status_code)
        assert statuses == [200, 200, 200, 429]
    finally:
        server.stop()


def test_a_key_created_while_serving_ends_open_mode(tmp_path: Path) -> None:
    server = Server(tmp_path, CELLBOX_API_KEYS="").start()
    try:
        with raw(server, key=None) as anonymous:
            assert anonymous.get("/v1/containers").status_code == 200
            done = subprocess.run([sys.executable, "-m", "cellbox.cli", "keys", "create", "--project", "team",
                                   "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            until(lambda: anonymous.get("/v1/containers").status_code == 401, "the server to re-read its keys")
            check_error(anonymous.get("/v1/containers"), 401, "api key")
            assert anonymous.get("/health").json()["auth"] == "api keys"
        with raw(server, key=done.stdout.strip()) as keyed:
            assert keyed.get("/v1/containers").status_code == 200
    finally:
        server.stop()


def test_a_key_revoked_while_serving_stops_working(server: Server) -> None:
    """The server remembers keys it has read; `cellbox keys revoke` (another process) must still end one."""
    cli = [sys.executable, "-m", "cellbox.cli", "keys"]
    made = subprocess.run([*cli, "create", "--project", "revoked", "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    with raw(server, key=key) as keyed:
        for _ in range(3):  # read, then served from what the server remembers
            assert keyed.get("/v1/containers").status_code == 200
        key_id = hashlib.sha256(key.encode()).hexdigest()[:12]
        revoked = subprocess.run([*cli, "revoke", key_id, "--data-dir", str(server.data_dir)],
                                 capture_output=True, text=True, timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        until(lambda: keyed.get("/v1/containers").status_code == 401, "the server to re-read its keys")
        check_error(keyed.get("/v1/containers"), 401, "incorrect api key")
        check_error(keyed.post("/v1/containers", json={"name": "after"}), 401, "incorrect api key")
    with raw(server) as others:  # the seeded keys are untouched
        assert others.get("/v1/containers").status_code == 200
