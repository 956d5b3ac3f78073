"""A cluster on loopback, as issue #15 draws it: two api servers (no engine) and three nodes, sharing one
PostgreSQL catalog and one S3-compatible store (moto), every server its own process. Clients use the stock openai
SDK against one api server and then the other: containers spread over the nodes; one made through the first is
used through the second; a response runs in a container that lives on node 3, with its files cited; MCP works
through an api server; a node killed mid-execution loses its containers (they say why), the rest go on; an api
server killed mid-upload loses nothing acknowledged, the client's retry succeeds, nothing half-made stays, and the
response it was running is failed by the others. Nodes answer only the servers of their cluster."""

from __future__ import annotations

import asyncio
import contextlib
import http.client as http_client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests import s3
from tests.integration.api.server import Server, check_error, client, raw
from tests.integration.api.test_mcp import container_of, mcp_session, texts
from tests.postgres import Postgres, node_of_container
from tests.upstream import ScriptedUpstream
from tests.waiting import until

FAST = {"CELLBOX_HEARTBEAT_INTERVAL": "0.5", "CELLBOX_NODE_TIMEOUT": "3", "CELLBOX_PRELOAD": '["matplotlib.pyplot"]',
        "CELLBOX_WARM_POOL": "1"}
TOKEN = secrets.token_hex(32)
OUTPUTS: Any = ["code_interpreter_call.outputs"]
STARTED = "open('/mnt/data/started', 'w').close()\nimport time\ntime.sleep(600)"


@dataclass
class Cluster:
    apis: list[Server]
    nodes: list[Server]
    database: str
    bucket: str
    moto: s3.MotoServer
    ids: dict[str, Server]  # node id -> its server

    def owner(self, cid: str) -> Server:
        """The node whose engine runs container ``cid``."""
        return self.ids[node_of_container(self.database, cid)]

    def cli(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "cellbox.cli", "node", *args, "--data-dir",
                               str(self.nodes[0].data_dir)], env={**os.environ, "CELLBOX_DATABASE_URL": self.database},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if "--json" in args else done.stdout


def node_id(server: Server) -> str:
    return str(httpx.get(server.url + "/health", timeout=30).json()["node"]["id"])


@pytest.fixture(scope="module")
def cluster(postgres: Postgres, moto: s3.MotoServer, upstream: ScriptedUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database, bucket = postgres.database(), moto.new_bucket()
    shared = {**FAST, **s3.ENV, "CELLBOX_DATABASE_URL": database, "CELLBOX_BLOB_URL": f"s3://{bucket}/cellbox",
              "CELLBOX_S3_ENDPOINT_URL": moto.url, "CELLBOX_S3_REGION": s3.REGION, "CELLBOX_NODE_TOKEN": TOKEN}
    root = tmp_path_factory.mktemp("cluster")
    # Nodes on one machine need uid ranges of their own (each hands out its range as if alone).
    nodes = [Server(root / f"node{n}", **shared, CELLBOX_ROLE="node", CELLBOX_SANDBOX_UID=str(600_000 + n * 10_000),
                    CELLBOX_SANDBOX_GID=str(600_000 + n * 10_000), CELLBOX_SANDBOX_ID_COUNT="1000")
             for n in (1, 2, 3)]
    apis = [Server(root / f"api{n}", **shared, CELLBOX_ROLE="api", CELLBOX_UPSTREAM_BASE_URL=upstream.url)
            for n in (1, 2)]
    try:
        for server in nodes + apis:
            server.start()
        yield Cluster(apis, nodes, database, bucket, moto, {node_id(n): n for n in nodes})
    finally:
        for server in apis + nodes:
            said = server.stop()
            assert "Traceback" not in said, said[-3000:]
        for server in nodes:
            if mounted(server.data_dir):  # killed by a test that then failed: a start cleans up what it left
                server.start()
                server.stop()


def mounted(data_dir: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if f" {data_dir}/" in line]


def test_containers_spread_over_the_nodes_and_work_through_either_api_server(cluster: Cluster) -> None:
    one, two = cluster.apis
    with client(one) as first, client(two) as second, client(two, "key-b") as stranger:
        boxes = [first.containers.create(name=f"spread {n}") for n in range(3)]
        owners = [cluster.owner(box.id) for box in boxes]
        assert set(owners) == set(cluster.nodes)  # the least loaded node takes each, counted at once
        with raw(two) as http:
            for box, owner in zip(boxes, owners, strict=True):
                ran = http.post(f"/v1/containers/{box.id}/execute", json={"code": "open('here', 'w').close(); 6*7"})
                assert ran.json()["outputs"] == [{"type": "logs", "logs": "42\n"}]
                assert list(owner.data_dir.rglob("here"))  # on its node, and no other
                assert sum(bool(list(n.data_dir.rglob("here"))) for n in cluster.nodes) == boxes.index(box) + 1
            # Another project sees none of them, through either server, whatever it claims to be.
            forged = http.get(f"/v1/containers/{boxes[0].id}", headers={"Authorization": "Bearer key-b",
                                                                          "x-cellbox-project": "project-a"})
            check_error(forged, 404, "not found")
        with pytest.raises(openai.NotFoundError):
            stranger.containers.retrieve(boxes[1].id)
        upload = second.containers.files.create(boxes[2].id, file=("made.csv", b"a,b\n1,2\n"))
        assert first.containers.files.content.retrieve(upload.id, container_id=boxes[2].id).read() == b"a,b\n1,2\n"
        assert {f.path for f in first.containers.files.list(boxes[2].id)} == {"/mnt/data/here", "/mnt/data/made.csv"}
        assert {c.id for c in second.containers.list()} >= {b.id for b in boxes}
        for box in boxes:
            second.containers.delete(box.id)
            with pytest.raises(openai.NotFoundError):
                first.containers.retrieve(box.id)


def test_a_response_runs_in_a_container_on_node_3_and_cites_its_files(cluster: Cluster, upstream: ScriptedUpstream,
                                                                      model: str) -> None:
    one, two = cluster.apis
    third = node_id(cluster.nodes[2])
    for drained in cluster.nodes[:2]:
        cluster.cli("drain", node_id(drained))
    try:
        with client(one) as first:
            box = first.containers.create(name="for the response")
    finally:
        for drained in cluster.nodes[:2]:
            cluster.cli("resume", node_id(drained))
    assert cluster.owner(box.id) is cluster.nodes[2], third
    code = ("import matplotlib.pyplot as plt\nopen('/mnt/data/report.csv', 'w').write('a,b\\n1,2\\n')\n"
            "plt.plot([1, 4, 9])")
    upstream.script(model, {"code": code}, {"text": "See [the report](sandbox:/mnt/data/report.csv)."})
    with client(two) as second, client(one) as first:
        response = second.responses.create(model=model, input="Write a report", include=OUTPUTS,
                                           tools=[{"type": "code_interpreter", "container": box.id}])
        assert response.status == "completed", response
        call = next(item for item in response.output if item.type == "code_interpreter_call")
        assert call.container_id == box.id
        assert call.status == "completed"
        assert any(o.type == "image" for o in call.outputs or [])
        annotations = [a for item in response.output if item.type == "message" for part in item.content
                       for a in part.annotations]
        cited = {a.filename: a for a in annotations if a.type == "container_file_citation"}
        assert "report.csv" in cited
        assert any(name.endswith(".png") for name in cited)  # the displayed figure, kept as a file
        data = first.containers.files.content.retrieve(cited["report.csv"].file_id, container_id=box.id).read()
        assert data == b"a,b\n1,2\n"
        assert list(cluster.nodes[2].data_dir.rglob("report.csv"))

        # An auto container with a Files API file: made on some node, the file copied in from the shared store.
        source = first.files.create(file=("input.txt", b"from the object store"), purpose="assistants")
        upstream.script(model, {"code": "print(open('/mnt/data/input.txt').read())"}, {"text": "Read it."})
        auto = second.responses.create(model=model, input="Read the file", include=OUTPUTS, tools=[
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [source.id]}}])
        ran = next(item for item in auto.output if item.type == "code_interpreter_call")
        assert [o.logs for o in ran.outputs or [] if o.type == "logs"] == ["from the object store\n"]
        assert cluster.owner(ran.container_id) in cluster.nodes
        first.containers.delete(ran.container_id)
        first.containers.delete(box.id)


def test_mcp_through_an_api_server_runs_on_a_node(cluster: Cluster) -> None:
    async def use() -> tuple[str, str, str]:
        async with mcp_session(cluster.apis[0]) as session:
            ran = await session.call_tool("python", {"code": "x = 6 * 7\nopen('kept.txt', 'w').write(str(x))"})
            cid = container_of(ran)
            again = await session.call_tool("python", {"code": "print(x)"})
            read = await session.call_tool("read_file", {"path": "kept.txt"})
            listed = await session.call_tool("list_files", {})
            return cid, texts(again), texts(read) + texts(listed)

    async def stranger(cid: str) -> str:
        async with mcp_session(cluster.apis[1], "key-b") as session:
            return texts(await session.call_tool("python", {"code": "1", "container_id": cid}))

    cid, again, files = asyncio.run(use())
    assert "not found" in asyncio.run(stranger(cid))  # the node says so, for the project the api server named
    assert again.startswith("42\n")
    assert "42" in files
    assert "/mnt/data/kept.txt" in files
    assert list(cluster.owner(cid).data_dir.rglob("kept.txt"))
    with client(cluster.apis[1]) as second:
        second.containers.delete(cid)


def test_nodes_answer_the_servers_of_their_cluster_only(cluster: Cluster) -> None:
    node = cluster.nodes[0]
    assert httpx.get(node.url + "/health", timeout=30).status_code == 200  # the probes stay open
    with raw(node) as http:
        check_error(http.get("/v1/containers"), 401, "answers the servers of its cluster only")
        check_error(http.post("/v1/containers", json={"name": "direct"}), 401, "answers the servers of its cluster")
        check_error(http.get("/v1/containers", headers={"x-cellbox-node-token": "x" * 64}), 401,
                    "incorrect node token")
        # With the token a server names the project it works for; beside a wrong token it is refused.
        check_error(http.get("/v1/containers/cntr_0", headers={"x-cellbox-node-token": TOKEN,
                                                              "x-cellbox-project": "project-a"}), 404, "not found")
    with raw(cluster.apis[0]) as http, client(cluster.apis[1], "key-b") as other:
        check_error(http.get("/v1/containers", headers={"x-cellbox-node-token": "wrong",
                                                        "x-cellbox-project": "project-b"}), 401, "incorrect node token")
        theirs = other.containers.create(name="project b's")
        listed = http.get("/v1/containers", headers={"x-cellbox-project": "project-b"})  # no token: the key counts
        assert listed.status_code == 200
        assert theirs.id not in {c["id"] for c in listed.json()["data"]}
        check_error(http.get(f"/v1/containers/{theirs.id}", headers={"x-cellbox-project": "project-b"}), 404,
                    "not found")  # relayed to its node without the claim: the key's project decides
        other.containers.delete(theirs.id)
    with raw(cluster.apis[0], key=None) as keyless:  # placing counts a create: never for a stranger
        for _ in range(3):
            check_error(keyless.post("/v1/containers", json={"name": "no key"}), 401, "missing api key")
    with client(cluster.apis[0]) as sdk:
        box = sdk.containers.create(name="a way in?")
        for dots in ("..", "%2e%2e"):  # a path that would resolve to another endpoint of the node is never relayed
            connection = http_client.HTTPConnection("127.0.0.1", cluster.apis[0].port, timeout=60)
            connection.request("GET", f"/v1/containers/{box.id}/{dots}/{dots}/files",
                               headers={"Authorization": "Bearer key-a"})
            answer = connection.getresponse()
            assert answer.status == 404, answer.read()
            connection.close()
        sdk.containers.delete(box.id)
    servers = cluster.cli("ls", "--json")
    roles = {s["id"]: s["role"] for s in servers}
    assert sorted(roles.values()) == ["api", "api", "node", "node", "node"]


def test_a_node_killed_mid_execution_loses_its_containers_and_no_request_hangs(cluster: Cluster,
                                                                               upstream: ScriptedUpstream,
                                                                               model: str) -> None:
    one, two = cluster.apis
    with client(one) as first, raw(one) as http, client(two) as second:
        boxes = [first.containers.create(name=f"kill {n}") for n in range(3)]
        victim_box = boxes[0]
        victim = cluster.owner(victim_box.id)
        lost = node_id(victim)
        ended: dict[str, Any] = {}

        def run_forever() -> None:
            try:
                ended["response"] = http.post(f"/v1/containers/{victim_box.id}/execute", json={"code": STARTED})
            except httpx.HTTPError as exc:
                ended["error"] = exc

        beside = next(box for box in (first.containers.create(name=f"beside {n}") for n in range(6))
                      if cluster.owner(box.id) is victim)  # creates spread: one of the next three lands there
        boxes.append(beside)

        def respond_forever() -> None:  # the loop on api server two, its code on the victim
            ended["answer"] = second.responses.create(model=model, input="run", tools=[
                {"type": "code_interpreter", "container": beside.id}])

        upstream.script(model, {"code": STARTED.replace("started", "answering")}, {"text": "never"})
        running = [threading.Thread(target=run_forever), threading.Thread(target=respond_forever)]
        for thread in running:
            thread.start()
        until(lambda: list(victim.data_dir.rglob("started")) and list(victim.data_dir.rglob("answering")),
              "the code to start")
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        for thread in running:
            thread.join(timeout=120)
            assert not thread.is_alive()  # no hang
        assert ended["response"].status_code in (400, 503), ended["response"].text
        assert ended["answer"].status == "failed"
        assert ended["answer"].error is not None
        assert f"node {lost}" in ended["answer"].error.message
        try:
            with raw(two) as other:
                until(lambda: other.get(f"/v1/containers/{victim_box.id}").json().get("status") == "expired",
                      "the node to be given up")
                check_error(other.post(f"/v1/containers/{victim_box.id}/execute", json={"code": "1"}), 400,
                            f"its node {lost} was lost")
                for box in boxes[1:]:
                    if cluster.owner(box.id) is not victim:
                        assert other.post(f"/v1/containers/{box.id}/execute",
                                          json={"code": "print(2)"}).json()["outputs"] == [{"type": "logs",
                                                                                            "logs": "2\n"}]
                placed = [first.containers.create(name=f"after {n}") for n in range(3)]
                assert victim not in {cluster.owner(box.id) for box in placed}  # new containers go elsewhere
                for box in placed:
                    first.containers.delete(box.id)
        finally:
            victim.stop()
            victim.start()
        assert {s["id"]: s["state"] for s in cluster.cli("ls", "--json")}[lost] == "up"
        for box in boxes:
            first.containers.delete(box.id)


def test_an_api_server_killed_mid_upload_loses_nothing_acknowledged(cluster: Cluster, upstream: ScriptedUpstream,
                                                                    model: str) -> None:
    one, two = cluster.apis
    store = cluster.moto.client()
    with client(one) as first, client(two) as second:
        kept = first.files.create(file=("kept.txt", b"acknowledged"), purpose="assistants")
        # A background response whose code is still running on a node when its api server dies.
        upstream.script(model, {"code": STARTED}, {"text": "never"})
        background = first.responses.create(model=model, input="run", background=True,
                                            tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
        until(lambda: any(list(n.data_dir.rglob("started")) for n in cluster.nodes), "the response's code to start")

        sent, killed = threading.Event(), threading.Event()
        boundary = "cellbox-upload-boundary"

        def body() -> Iterator[bytes]:
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n"
                   f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n").encode()
            for n in range(64):
                yield b"x" * (1 << 16)
                if n == 16:
                    sent.set()
                    killed.wait(120)
            yield f"\r\n--{boundary}--\r\n".encode()

        failed: dict[str, BaseException] = {}

        def upload() -> None:
            try:
                httpx.post(one.url + "/v1/files", content=body(), timeout=120,
                           headers={"Authorization": "Bearer key-a",
                                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
            except httpx.HTTPError as exc:
                failed["error"] = exc

        uploading = threading.Thread(target=upload)
        uploading.start()
        try:
            assert sent.wait(120)
            assert one.process is not None
            one.process.send_signal(signal.SIGKILL)
            one.process.wait(60)
        finally:
            killed.set()
            uploading.join(120)
        assert "error" in failed  # the client saw the upload fail

        retried = second.files.create(file=("big.bin", b"x" * (64 << 16)), purpose="assistants")
        names = [f.filename for f in second.files.list()]
        assert names.count("big.bin") == 1
        assert "kept.txt" in names
        assert second.files.content(kept.id).read() == b"acknowledged"
        assert second.files.content(retried.id).read() == b"x" * (64 << 16)
        objects = store.list_objects_v2(Bucket=cluster.bucket, Prefix="cellbox/").get("Contents", [])
        assert len(objects) == len(names)  # one object per file, no stray bytes
        assert not store.list_multipart_uploads(Bucket=cluster.bucket).get("Uploads")

        # The response the dead server ran is failed by the others, saying why.
        until(lambda: second.responses.retrieve(background.id).status == "failed", "the response to be failed")
        assert "was lost" in (second.responses.retrieve(background.id).error.message or "")
        assert all(s["role"] != "api" or s["url"] != one.url for s in cluster.cli("ls", "--json"))
        one.stop()
        one.start()
        with contextlib.suppress(openai.NotFoundError):
            for box in second.containers.list():
                if box.name.startswith("auto: "):
                    second.containers.delete(box.id)
        second.files.delete(retried.id)
        second.files.delete(kept.id)
