"""Nodes: servers sharing one PostgreSQL catalog each own their containers, answer for each other's (relayed to the
owner), report a heartbeat, and give up a node that stops reporting (SIGKILL mid-execution): its containers expire
and say why, the others go on. A drained node takes no new containers: it sends them to a node with room, or, alone,
refuses them until it is resumed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from cellbox.services.remote import RELAYED_PER_PROJECT
from tests.integration.api.server import Server, check_error, client, raw
from tests.postgres import Postgres, node_of_container
from tests.waiting import until

# Heartbeats every half second, lost after three: the wait for a loss stays short, and bounded by PATIENCE.
FAST = {"CELLBOX_HEARTBEAT_INTERVAL": "0.5", "CELLBOX_NODE_TIMEOUT": "3", "CELLBOX_PRELOAD": "[]",
        "CELLBOX_WARM_POOL": "1"}
LOGS_2 = [{"type": "logs", "logs": "2\n"}]


def nodes(data_dir: Path, *args: str, **env: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "node", *args, "--data-dir", str(data_dir)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def node_of(server: Server) -> str:
    return str(httpx.get(server.url + "/health", timeout=30).json()["node"]["id"])


def two_nodes(database: dict[str, str], tmp_path: Path) -> tuple[Server, Server]:
    """Two nodes on one catalog, started. Two servers on one machine need uid ranges of their own (each hands out
    its range as if alone)."""
    a = Server(tmp_path / "a", **FAST, **database, CELLBOX_SANDBOX_UID="400000", CELLBOX_SANDBOX_GID="400000",
               CELLBOX_SANDBOX_ID_COUNT="1000")
    b = Server(tmp_path / "b", **FAST, **database, CELLBOX_SANDBOX_UID="500000", CELLBOX_SANDBOX_GID="500000",
               CELLBOX_SANDBOX_ID_COUNT="1000")
    a.start()
    try:
        b.start()
    except BaseException:
        a.stop()
        raise
    return a, b


def test_a_node_killed_mid_execution_is_lost_and_its_containers_say_so(postgres: Postgres, tmp_path: Path) -> None:
    database = {"CELLBOX_DATABASE_URL": postgres.database()}
    a, b = two_nodes(database, tmp_path)
    try:
        node_a, node_b = node_of(a), node_of(b)
        assert node_a != node_b
        listed = {n["id"]: n for n in nodes(a.data_dir, "ls", "--json", **database)}
        assert {listed[node_a]["state"], listed[node_b]["state"]} == {"up"}
        assert listed[node_b]["url"] == b.url
        with client(a) as on_a, client(b) as on_b, raw(a) as http_a:
            box_a = on_a.containers.create(name="on a")
            box_b = on_b.containers.create(name="on b")
            assert on_a.containers.retrieve(box_b.id).status == "running"  # one catalog

            # Everything about box_b sent to a is relayed to b, which runs it.
            ran = http_a.post(f"/v1/containers/{box_b.id}/execute", json={"code": "open('here', 'w').close()"})
            assert ran.status_code == 200, ran.text
            assert list((tmp_path / "b").rglob("here"))
            assert not list((tmp_path / "a").rglob("here"))
            with http_a.stream("POST", f"/v1/containers/{box_b.id}/execute",
                               json={"code": "print('streamed')", "stream": True}) as streamed:
                assert streamed.headers["content-type"].startswith("text/event-stream")
                assert "streamed" in "".join(streamed.iter_text())
            upload = on_a.containers.files.create(box_b.id, file=("up.csv", b"x,y\n1,2\n"))
            assert {f.path for f in on_a.containers.files.list(box_b.id)} == {"/mnt/data/here", "/mnt/data/up.csv"}
            assert on_a.containers.files.content.retrieve(upload.id, container_id=box_b.id).read() == b"x,y\n1,2\n"
            spare = on_b.containers.create(name="spare on b")
            on_a.containers.delete(spare.id)
            with pytest.raises(openai.NotFoundError):
                on_b.containers.retrieve(spare.id)

            # A drained a sends new containers to the live node with room: b.
            nodes(a.data_dir, "drain", **database)
            until(lambda: http_a.get("/health").json()["node"]["state"] == "draining", "a to notice its drain")
            placed = on_a.containers.create(name="placed while a drains")
            assert http_a.post(f"/v1/containers/{placed.id}/execute",
                               json={"code": "open('placed', 'w').close()"}).status_code == 200
            assert list((tmp_path / "b").rglob("placed"))
            nodes(a.data_dir, "resume", **database)
            until(lambda: http_a.get("/health").json()["node"]["state"] == "up", "a to notice its resume")

            ended: dict[str, Any] = {}

            def run_forever() -> None:  # relayed through a, running on b when b is killed
                try:
                    ended["response"] = http_a.post(f"/v1/containers/{box_b.id}/execute",
                                                    json={"code": "open('started', 'w').close()\n"
                                                                  "import time\ntime.sleep(600)"})
                except httpx.HTTPError as exc:
                    ended["error"] = exc

            running = threading.Thread(target=run_forever)
            running.start()
            until(lambda: list((tmp_path / "b").rglob("started")), "the code to start")
            assert b.process is not None
            b.process.send_signal(signal.SIGKILL)
            running.join(timeout=120)
            assert not running.is_alive()  # no hang: a says its owner did not answer
            check_error(ended["response"], 503, f"node {node_b} ({b.url}), which runs this container, did not answer")

            # Until b is given up for lost, a answers 503 "did not answer; try again"; then b's containers expired.
            until(lambda: http_a.get(f"/v1/containers/{box_b.id}").json().get("status") == "expired",
                  "node b to be given up")
            assert on_a.containers.retrieve(box_b.id).status == "expired"
            gone = http_a.post(f"/v1/containers/{box_b.id}/execute", json={"code": "1"})
            check_error(gone, 400, f"its node {node_b} was lost")
            still = http_a.post(f"/v1/containers/{box_a.id}/execute", json={"code": "print(2)"})
            assert still.json()["outputs"] == LOGS_2
            states = {n["id"]: n["state"] for n in nodes(a.data_dir, "ls", "--json", **database)}
            assert states == {node_a: "up", node_b: "down"}

        b.stop()  # reap what SIGKILL left, then come back: up again, the lost container stays expired
        b.start()
        assert node_of(b) == node_b
        with client(b) as on_b:
            assert on_b.containers.retrieve(box_b.id).status == "expired"
        assert {n["id"]: n["state"] for n in nodes(a.data_dir, "ls", "--json", **database)}[node_b] == "up"
        said = b.stop()
        with open("/proc/self/mountinfo") as f:
            left = [line.split()[4] for line in f if f" {tmp_path}/b/" in line]
        assert left == [], said  # what the killed node had mounted is gone too
    finally:
        b.stop()
        a.stop()


def test_a_drained_node_takes_no_new_containers_until_resumed(tmp_path: Path) -> None:
    server = Server(tmp_path, **FAST).start()
    try:
        with client(server) as sdk, raw(server) as http:
            kept = sdk.containers.create(name="kept")
            said = nodes(server.data_dir, "drain")
            assert f"node {node_of(server)} is draining" in said
            until(lambda: http.get("/health").json()["node"]["state"] == "draining", "the node to notice")
            refused = http.post("/v1/containers", json={"name": "new"})
            check_error(refused, 503, "is draining: it takes no new containers")
            assert http.post(f"/v1/containers/{kept.id}/execute", json={"code": "print(2)"}).json()["outputs"] == LOGS_2
            assert [c.name for c in sdk.containers.list()] == ["kept"]  # nothing half-made

            server.stop()
            server.start()  # still draining after a restart: an operator's word holds
            assert http.get("/health").json()["node"]["state"] == "draining"
            assert "is up" in nodes(server.data_dir, "resume")
            until(lambda: http.get("/health").json()["node"]["state"] == "up", "the node to notice")
            assert sdk.containers.create(name="new").status == "running"
    finally:
        server.stop()


def test_node_commands_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "node", "drain", "node_nosuch", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (1, "cellbox: no node node_nosuch: `cellbox node ls` lists them\n")


@pytest.mark.parametrize(("value", "said"), [
    ("1", "node_timeout (1.0) must be at least three heartbeat intervals (15.0)"),
    ("0", "CELLBOX_NODE_TIMEOUT: Input should be greater than 0"),
])
def test_a_node_timeout_shorter_than_three_heartbeats_is_refused_at_start(tmp_path: Path, value: str,
                                                                          said: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cellbox.cli", "serve", "--data-dir", str(tmp_path)],
                          env={**os.environ, "CELLBOX_NODE_TIMEOUT": value}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"cellbox: error: invalid configuration: {said}")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_node_given_up_while_paused_stops_what_it_no_longer_owns(postgres: Postgres, tmp_path: Path) -> None:
    database = {"CELLBOX_DATABASE_URL": postgres.database()}
    a, b = two_nodes(database, tmp_path)
    try:
        with client(b) as on_b, raw(b) as http_b:
            box = on_b.containers.create(name="paused with b")
            assert b.process is not None
            b.process.send_signal(signal.SIGSTOP)  # alive, but silent: a gives it up
            try:
                until(lambda: httpx.get(f"{a.url}/v1/containers/{box.id}", headers=http_b.headers,
                                        timeout=60).json().get("status") == "expired", "a to give b up")
            finally:
                b.process.send_signal(signal.SIGCONT)
            until(lambda: "stopped 1 sandbox(es)" in b"".join(b._stderr).decode(), "b to stop the sandbox")
            gone = http_b.post(f"/v1/containers/{box.id}/execute", json={"code": "1"})
            check_error(gone, 400, "has expired")
            assert on_b.containers.create(name="after").status == "running"  # up again, taking containers
    finally:
        b.stop()
        a.stop()


def test_a_project_whose_relay_share_is_in_use_still_makes_containers_here(postgres: Postgres,
                                                                          tmp_path: Path) -> None:
    """A project with its share of requests relayed through a node gets a 429 for one more relayed request, but a
    create that node can make itself is made there: it needs no relayed request."""
    database = {"CELLBOX_DATABASE_URL": postgres.database()}
    a, b = two_nodes(database, tmp_path)

    async def hold_the_share(box: str) -> tuple[int, str, int]:
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(base_url=a.url, timeout=120, limits=limits,
                                     headers={"Authorization": "Bearer key-a"}) as http, \
                contextlib.AsyncExitStack() as streams:
            # One execution runs on; the others wait their turn in the container, each holding one relayed slot.
            for n in range(RELAYED_PER_PROJECT):
                code = "import time; time.sleep(3600)" if n == 0 else "1"
                opened = await streams.enter_async_context(http.stream(
                    "POST", f"/v1/containers/{box}/execute", json={"code": code, "stream": True}))
                assert opened.status_code == 200, await opened.aread()
            refused = await http.get(f"/v1/containers/{box}")
            made = await http.post("/v1/containers", json={"name": "while the share is in use"})
            return refused.status_code, made.json().get("id", made.text), made.status_code

    try:
        with client(b) as on_b, raw(a) as http_a:
            box_b = on_b.containers.create(name="busy on b").id
            until(lambda: http_a.post(f"/v1/containers/{box_b}/execute", json={"code": "1"}).status_code == 200,
                  "node a to learn of node b")
            refused, made, status = asyncio.run(hold_the_share(box_b))
            assert (refused, status) == (429, 200), made
            assert node_of_container(database["CELLBOX_DATABASE_URL"], made) == node_of(a)
            ran = http_a.post(f"/v1/containers/{made}/execute", json={"code": "print(2)"})
            assert ran.json()["outputs"] == LOGS_2
    finally:
        a.stop()
        b.stop()
