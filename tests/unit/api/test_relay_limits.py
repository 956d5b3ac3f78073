"""What bounds the requests a server sends to other nodes: a full pool of connections is a 503 to retry (relayed
requests and remote calls alike), never a wait forever; one project may have only its share of the pool in flight
(a 429 beyond), gets each slot back when its answer has been sent or its client went away, and claims no room on a
node for a create it was refused; a node's 2xx answer this server cannot read is a 503 that names the node, never a
500. Real parts on 127.0.0.1: a real app with its real services (no engine) served by uvicorn, relaying to a node
played by a small ASGI app, also served by uvicorn, whose executions end only when the test says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from cellbox.api.app import create_app
from cellbox.api.errors import describe
from cellbox.config import Settings
from cellbox.errors import RateLimited, SandboxUnavailable
from cellbox.schemas.containers import CreateContainer
from cellbox.services.in_flight import RETRY_AFTER, InFlight
from cellbox.services.node_pool import NODE_CONNECTIONS
from cellbox.services.nodes import DRAINING, Nodes
from cellbox.services.remote import BUSY_RETRY_AFTER, RELAYED_PER_PROJECT, Remote
from cellbox.services.wiring import Services
from tests.integration.api.server import check_error
from tests.unit.services.test_nodes import container

BOUND = 60.0  # seconds: only turns a hang (the defect) into a failure; nothing about durations is asserted
PROJECTS = -(-NODE_CONNECTIONS // RELAYED_PER_PROJECT) + 1  # enough to fill the pool within their shares, and one
KEYS = {f"key-{n}": f"project-{n}" for n in range(1, PROJECTS + 1)}
TOKEN = "t" * 32
NODE_ID = "node_0f0f0f0f0f0f0f0f"
BOX = "cntr_" + "b0" * 16  # a container the node plays
EXECUTE = f"/v1/containers/{BOX}/execute"


def key(n: int) -> dict[str, str]:
    return {"Authorization": f"Bearer key-{n}"}


class _Quiet(uvicorn.Server):
    """uvicorn's server without its signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, lifespan: str = "off") -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 in this event loop; its URL. The socket listens before uvicorn starts, so a
    request sent at once waits in the backlog rather than failing."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = _Quiet(uvicorn.Config(app, lifespan=lifespan, log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(BOUND):
            await task
        sock.close()


class Node:
    """A node as another server sees it: each execute waits until ``released`` (a streamed one sends its first event
    at once), or until its caller goes away, which it counts; anything else answers at once. With ``answer`` set,
    every request gets that 200 (content type, body) instead."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.waiting = 0  # executes waiting now
        self.left = 0  # executes whose caller went away while they waited
        self.answer: tuple[str, bytes] | None = None
        self.received: list[tuple[dict[bytes, bytes], bytes]] = []  # each request's headers and body, as they came
        self.queries: list[str] = []  # and its query string
        self._changed = asyncio.Condition()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND), self._changed:
            await self._changed.wait_for(predicate)

    async def _count(self, waiting: int, left: int = 0) -> None:
        async with self._changed:
            self.waiting += waiting
            self.left += left
            self._changed.notify_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.received.append((dict(scope["headers"]), body))
        self.queries.append(scope["query_string"].decode())
        if self.answer is not None:
            await _answer(send, self.answer[0], self.answer[1])
        elif scope["path"].endswith("/execute"):
            await self._execute(bool(json.loads(body).get("stream")), receive, send)
        else:
            await _answer(send, "application/json", json.dumps({"id": BOX, "status": "running"}).encode())

    async def _execute(self, stream: bool, receive: Receive, send: Send) -> None:
        if stream:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": b"event: output\ndata: {}\n\n", "more_body": True})
        await self._count(+1)
        released = asyncio.ensure_future(self.released.wait())
        gone = asyncio.ensure_future(receive())  # the body is read: what comes now is the caller going away
        await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        released.cancel()
        if not self.released.is_set():
            await self._count(-1, left=1)
            return
        await self._count(-1)
        if stream:
            await send({"type": "http.response.body", "body": b"event: done\ndata: {}\n\n", "more_body": False})
        else:
            await _answer(send, "application/json", b'{"outputs": []}')


async def _answer(send: Send, content_type: str, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Slots(InFlight):
    """The api server's real slots per project, telling the test each time one is given back (after the request's
    last byte, which no client sees)."""

    def __init__(self, per_project: int) -> None:
        super().__init__(per_project)
        self._released = asyncio.Event()

    def release(self, project: str | None) -> None:
        super().release(project)
        self._released.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND):
            while not predicate():
                self._released.clear()
                await self._released.wait()


@dataclass
class Cluster:
    node: Node
    node_url: str
    services: Services  # the api side's: its pool to the nodes
    slots: Slots  # and its slots per project
    api_url: str

    def client(self) -> httpx.AsyncClient:
        """A client with room for every request a test sends at once."""
        return httpx.AsyncClient(base_url=self.api_url, timeout=BOUND, limits=httpx.Limits(max_connections=None))

    def remote(self) -> Remote:
        """What the Responses loop and MCP use, on the same pool as the relay."""
        return Remote(self.services.node_pool, self.services.nodes, TOKEN, self.slots)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    node = Node()
    settings = Settings(data_dir=tmp_path / "api", api_keys=",".join(f"{k}={p}" for k, p in KEYS.items()),
                        node_token=TOKEN)
    services = Services(settings)
    services.relayed = slots = Slots(services.relayed.per_project)
    async with serving(node) as node_url:
        try:
            await services.db.migrate()
            await services.keys.start(settings.api_keys)
            await services.nodes.start(containers=0)
            await Nodes(services.db, Settings(data_dir=tmp_path / "node", node_url=node_url), NODE_ID).start(0)
            async with services.db.session() as session, session.begin():
                session.add(container(BOX, NODE_ID))
            await services.nodes.sweep()  # this server learns of the node
            async with serving(create_app(settings, services), lifespan="on") as api_url:
                try:
                    yield Cluster(node, node_url, services, slots, api_url)
                finally:
                    node.released.set()  # nothing left waiting when the servers stop
        finally:
            await services.aclose()


async def test_a_full_pool_to_the_nodes_is_a_503_to_retry_not_a_wait_forever(cluster: Cluster) -> None:
    async with cluster.client() as http:
        # The first projects, each within its share, hold every connection with executions that run on.
        slow = [asyncio.ensure_future(http.post(EXECUTE, json={"code": "1"}, headers=key(n // RELAYED_PER_PROJECT + 1)))
                for n in range(NODE_CONNECTIONS)]
        await cluster.node.until(lambda: cluster.node.waiting == NODE_CONNECTIONS)

        # Another project's relayed request, and the Responses loop's call, wait for a connection, then are told.
        remote = cluster.remote().run((NODE_ID, cluster.node_url), f"project-{PROJECTS}", BOX, "1", None, False)
        refused, raised = await asyncio.gather(http.post(EXECUTE, json={"code": "1"}, headers=key(PROJECTS)), remote,
                                               return_exceptions=True)
        assert isinstance(refused, httpx.Response), refused
        check_error(refused, 503, f"too many requests in flight to node {NODE_ID} ({cluster.node_url})")
        assert refused.headers["retry-after"] == str(BUSY_RETRY_AFTER)
        assert isinstance(raised, SandboxUnavailable), raised
        assert "too many requests in flight" in str(raised)
        assert (describe(raised)[0], raised.retry_after) == (503, BUSY_RETRY_AFTER)

        cluster.node.released.set()
        assert {r.status_code for r in await asyncio.gather(*slow)} == {200}
        assert (await http.post(EXECUTE, json={"code": "1"}, headers=key(PROJECTS))).status_code == 200
    assert cluster.node.left == 0  # nobody was cut off to make room
    await cluster.slots.until(lambda: cluster.slots.tracked == 0)


async def test_a_node_whose_connections_are_all_in_use_leaves_the_other_nodes_theirs(cluster: Cluster,
                                                                                    tmp_path: Path) -> None:
    other, other_id, other_box = Node(), "node_1e1e1e1e1e1e1e1e", "cntr_" + "c1" * 16
    other.released.set()  # its executions answer at once
    async with serving(other) as other_url, cluster.client() as http:
        await Nodes(cluster.services.db, Settings(data_dir=tmp_path / "other", node_url=other_url), other_id).start(0)
        async with cluster.services.db.session() as session, session.begin():
            session.add(container(other_box, other_id))
        await cluster.services.nodes.sweep()

        slow = [asyncio.ensure_future(http.post(EXECUTE, json={"code": "1"}, headers=key(n // RELAYED_PER_PROJECT + 1)))
                for n in range(NODE_CONNECTIONS)]
        await cluster.node.until(lambda: cluster.node.waiting == NODE_CONNECTIONS)

        # The first node's are all held; the other node's requests, relayed and remote, go through at once.
        relayed = await http.post(f"/v1/containers/{other_box}/execute", json={"code": "1"}, headers=key(PROJECTS))
        assert (relayed.status_code, relayed.json()) == (200, {"outputs": []})
        assert (await http.get(f"/v1/containers/{other_box}", headers=key(PROJECTS))).json()["status"] == "running"
        await cluster.remote().running((other_id, other_url), f"project-{PROJECTS}", other_box)
        assert cluster.node.waiting == NODE_CONNECTIONS  # the first node's are still held meanwhile

        cluster.node.released.set()
        assert {r.status_code for r in await asyncio.gather(*slow)} == {200}
    await cluster.slots.until(lambda: cluster.slots.tracked == 0)


async def test_a_relayed_request_arrives_as_the_client_sent_it(cluster: Cluster) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"first,", b"second,", b"third"):
            yield part

    async with cluster.client() as http:
        for name in ("user-agent", "accept-encoding"):  # httpx's own defaults: the node should see none
            del http.headers[name]
        headers = {**key(1), "user-agent": "the-client/1", "x-cellbox-project": "project-2"}
        sized = await http.post(f"/v1/containers/{BOX}/files", content=b"a" * 70_000, headers=headers)
        chunked = await http.post(f"/v1/containers/{BOX}/files", content=chunks(), headers=key(1))
        plain = await http.get(f"/v1/containers/{BOX}", headers=key(1))
    assert [r.status_code for r in (sized, chunked, plain)] == [200, 200, 200]
    (sized_headers, sized_body), (chunked_headers, chunked_body), (plain_headers, plain_body) = cluster.node.received
    assert (sized_body, sized_headers[b"content-length"]) == (b"a" * 70_000, b"70000")
    assert sized_headers[b"user-agent"] == b"the-client/1"
    assert sized_headers[b"x-cellbox-relayed-by"] == cluster.services.nodes.id.encode()
    assert b"x-cellbox-project" not in sized_headers  # the client cannot speak for another project
    assert (chunked_body, chunked_headers[b"transfer-encoding"]) == (b"first,second,third", b"chunked")
    assert plain_body == b""
    assert not {b"content-length", b"transfer-encoding"} & plain_headers.keys()  # no body made up for a GET
    assert not {b"user-agent", b"accept-encoding"} & {*chunked_headers, *plain_headers}  # nothing added on the way


async def test_a_project_relays_only_its_share_and_gets_each_slot_back(cluster: Cluster) -> None:
    slots = cluster.slots
    async with cluster.client() as http, contextlib.AsyncExitStack() as streams:
        opened = [await streams.enter_async_context(http.stream("POST", EXECUTE, json={"code": "1", "stream": True},
                                                                 headers=key(1)))
                  for _ in range(RELAYED_PER_PROJECT)]
        await cluster.node.until(lambda: cluster.node.waiting == RELAYED_PER_PROJECT)

        refused = await http.post(EXECUTE, json={"code": "1"}, headers=key(1))
        error = check_error(refused, 429, f"this project already has {RELAYED_PER_PROJECT} requests relayed")
        assert (error["code"], refused.headers["retry-after"]) == ("rate_limit_exceeded", str(RETRY_AFTER))
        assert (await http.get(f"/v1/containers/{BOX}", headers=key(2))).json()["status"] == "running"  # not starved
        # The Responses loop's and MCP's calls for the project count against the same share.
        with pytest.raises(RateLimited, match=f"already has {RELAYED_PER_PROJECT} requests"):
            await cluster.remote().running((NODE_ID, cluster.node_url), "project-1", BOX)
        await cluster.remote().running((NODE_ID, cluster.node_url), "project-2", BOX)

        # A create refused for the cap claims no room on the node it would have gone to (this one is draining).
        await cluster.services.nodes.set_state(cluster.services.nodes.id, DRAINING)
        await cluster.services.nodes.beat(containers=0)
        check_error(await http.post("/v1/containers", json={"name": "x"}, headers=key(1)), 429, "in flight")
        assert (await cluster.services.nodes.get(NODE_ID)).containers == 0  # type: ignore[union-attr]

        # A streamed execute whose client goes away gives its slot back; so does a plain one.
        await opened.pop().aclose()
        await cluster.node.until(lambda: cluster.node.left == 1)
        await slots.until(lambda: slots.held("project-1") == RELAYED_PER_PROJECT - 1)  # the stream's slot is back
        plain = asyncio.ensure_future(http.post(EXECUTE, json={"code": "1"}, headers=key(1)))
        await cluster.node.until(lambda: cluster.node.waiting == RELAYED_PER_PROJECT)
        plain.cancel()
        await cluster.node.until(lambda: cluster.node.left == 2)
        await slots.until(lambda: slots.held("project-1") == RELAYED_PER_PROJECT - 1)  # the plain one's too

        cluster.node.released.set()
        for response in opened:
            assert "event: done" in (await response.aread()).decode()
    await slots.until(lambda: slots.tracked == 0)  # a project with nothing in flight is forgotten


UNREADABLE = {
    "a proxy's page": ("text/html", b"<html><body>Please sign in to continue</body></html>"),
    "another version's JSON": ("application/json", b'{"object": "something.else", "data": 3}'),
}
CALLS: dict[str, Callable[[Remote, tuple[str, str]], Awaitable[Any]]] = {
    "create": lambda remote, node: remote.create(node, "p", CreateContainer(name="x"), "network_policy"),
    "running": lambda remote, node: remote.running(node, "p", BOX),
    "delete": lambda remote, node: remote.delete(node, "p", BOX),
    "run": lambda remote, node: remote.run(node, "p", BOX, "1", None, False),
    "files": lambda remote, node: remote.files(node, "p", BOX, 100),
    "files_at": lambda remote, node: remote.files_at(node, "p", BOX, ["/mnt/data/a.txt"]),
    "add_file": lambda remote, node: remote.add_file(node, "p", BOX, "file-1"),
    "add_upload": lambda remote, node: remote.add_upload(node, "p", BOX, "a.txt", b"a"),
}


@pytest.mark.parametrize("body", sorted(UNREADABLE))
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_a_2xx_answer_this_server_cannot_read_is_a_503_naming_the_node(cluster: Cluster, call: str,
                                                                              body: str) -> None:
    cluster.node.answer = UNREADABLE[body]
    with pytest.raises(SandboxUnavailable) as raised:
        await CALLS[call](cluster.remote(), (NODE_ID, cluster.node_url))
    said = f"node {NODE_ID} ({cluster.node_url}) sent an answer this server cannot read"
    assert re.match(re.escape(said), str(raised.value)), raised.value
    assert describe(raised.value)[0] == 503


async def test_files_by_path_ask_once_per_hundred_and_keep_only_what_was_asked(cluster: Cluster) -> None:
    """One request per 100 paths, however many files the container has; a node from before the filter answers with
    a page of everything, of which only the asked paths count."""
    def listed(path: str) -> dict[str, Any]:
        return {"id": f"cfile_{len(path)}", "object": "container.file", "container_id": BOX, "created_at": 1,
                "bytes": 1, "path": path, "source": "assistant"}

    page = {"object": "list", "data": [listed("/mnt/data/a.txt"), listed("/mnt/data/other.txt")], "first_id": "x",
            "last_id": "y", "has_more": True}
    cluster.node.answer = ("application/json", json.dumps(page).encode())
    asked = [f"/mnt/data/{n}.txt" for n in range(150)] + ["/mnt/data/a.txt"]
    found = await cluster.remote().files_at((NODE_ID, cluster.node_url), "p", BOX, asked)
    assert [file.path for file in found] == ["/mnt/data/a.txt"]
    queries = [parse_qs(query) for query in cluster.node.queries]  # 151 paths: two requests, not a walk of pages
    assert [(len(q["path"]), q["limit"]) for q in queries] == [(100, ["100"]), (51, ["100"])]
    assert sorted(q["path"][0] for q in queries) == ["/mnt/data/0.txt", "/mnt/data/100.txt"]
