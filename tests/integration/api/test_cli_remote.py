"""The CLI against a running server: status, containers ls | rm | exec, keys ls | revoke; and the Python client
for the execute extension."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest

from cellbox.client import AsyncClient, CellboxAPIError, Client, LogsOutput
from tests.integration.api.server import Server
from tests.waiting import until


def cli(server: Server, *args: str, key: str = "key-a", stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellbox.cli", *args, "--url", server.url, "--api-key", key],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_status_says_what_the_server_is(server: Server) -> None:
    done = cli(server, "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["status", "ok"]
    assert "warm pool" in done.stdout
    assert json.loads(cli(server, "status", "--json").stdout)["isolation"]["mode"] == "strict"


def test_containers_ls_exec_rm(server: Server, sdk: openai.OpenAI) -> None:
    box = sdk.containers.create(name="from-the-cli")
    listed = cli(server, "containers", "ls")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "STATUS"]
    assert any(row.split()[:3] == [box.id, "from-the-cli", "running"] for row in rows)
    assert box.id in {b["id"] for b in json.loads(cli(server, "containers", "ls", "--json").stdout)}
    ran = cli(server, "containers", "exec", box.id, "-", stdin="open('o.txt', 'w').write('x')\nprint(6 * 7)\n")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == "42"
    assert "[file: /mnt/data/o.txt (1 bytes" in ran.stdout
    failed = cli(server, "containers", "exec", box.id, "1/0")
    assert failed.returncode == 1
    assert "ZeroDivisionError" in failed.stdout
    removed = cli(server, "containers", "rm", box.id)
    assert removed.stdout.strip() == f"deleted {box.id}"
    again = cli(server, "containers", "rm", box.id)
    assert again.returncode == 1
    assert again.stderr.startswith("cellbox: Container with id")
    assert again.stderr.count("\n") == 1


def test_what_containers_say_never_reaches_the_terminal_raw(server: Server, sdk: openai.OpenAI) -> None:
    """A name or an output with terminal escapes (a title change, a screen clear) is shown escaped."""
    box = sdk.containers.create(name="evil\x1b]0;owned\x07\nrow")
    listed = cli(server, "containers", "ls")
    assert "\x1b" not in listed.stdout
    assert "\x07" not in listed.stdout
    assert "evil\\x1b]0;owned\\x07\\nrow" in listed.stdout
    ran = cli(server, "containers", "exec", box.id, "print('a\\x1b[2Jb')")
    assert ran.stdout.splitlines()[0] == "a\\x1b[2Jb"
    cli(server, "containers", "rm", box.id)


def test_a_wrong_key_or_an_unreachable_server_is_one_line(server: Server) -> None:
    refused = cli(server, "containers", "ls", key="nope")
    assert (refused.returncode, refused.stderr.count("\n")) == (1, 1)
    assert "api key" in refused.stderr.lower()
    gone = subprocess.run([sys.executable, "-m", "cellbox.cli", "status", "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=120)
    assert gone.returncode == 1
    assert gone.stderr.startswith("cellbox: cannot reach http://127.0.0.1:9")


def test_keys_ls_and_revoke(server: Server) -> None:
    base = [sys.executable, "-m", "cellbox.cli", "keys"]
    where = ["--data-dir", str(server.data_dir)]
    key = subprocess.run([*base, "create", "--project", "temp", *where], capture_output=True, text=True,
                         timeout=60).stdout.strip()
    listed = json.loads(subprocess.run([*base, "ls", "--json", *where], capture_output=True, text=True,
                                       timeout=60).stdout)
    mine = [row for row in listed if row["project"] == "temp"]
    assert len(mine) == 1
    assert key not in json.dumps(listed)  # keys are never stored, so never listed
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.url + "/v1/containers", headers=headers).status_code == 200
    revoked = subprocess.run([*base, "revoke", mine[0]["id"], *where], capture_output=True, text=True, timeout=60)
    assert revoked.stdout.strip() == f"revoked {mine[0]['id']} (project temp)"
    until(lambda: httpx.get(server.url + "/v1/containers", headers=headers).status_code == 401,
          "the server to re-read its keys", pause=0.2)
    unknown = subprocess.run([*base, "revoke", "ffffffffffff", *where], capture_output=True, text=True, timeout=60)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "cellbox: no key with id ffffffffffff")


def test_the_python_client_runs_code_sync_async_and_streamed(server: Server) -> None:
    with Client(server.url, api_key="key-a") as cellbox:
        box = cellbox.containers.create(name="client")
        result = cellbox.containers.execute(box.id, "x = 6 * 7\nprint(x)")
        assert result.status == "completed"
        assert result.outputs == [LogsOutput(logs="42\n")]
        streamed: list[Any] = list(cellbox.containers.stream(box.id, "print(x + 1)"))
        assert streamed[0] == LogsOutput(logs="43\n")
        assert streamed[-1].status == "completed"
        with pytest.raises(CellboxAPIError) as missing:
            cellbox.containers.execute("cntr_nope", "1")
        assert missing.value.status == 404

        async def run_async() -> list[Any]:
            async with AsyncClient(server.url, api_key="key-a") as aio:
                done = await aio.containers.execute(box.id, "print(x * 2)")
                items = [item async for item in aio.containers.stream(box.id, "print(x * 3)")]
                await aio.containers.delete(box.id)
                return [done, *items]

        done, *items = asyncio.run(run_async())
        assert done.outputs == [LogsOutput(logs="84\n")]
        assert items[0] == LogsOutput(logs="126\n")
