"""This server's connections to the other nodes, for relayed requests (api/relay.py) and remote calls
(services/remote.py): one aiohttp session, and a bound on the requests in flight to each node.

A long execution holds its connection for as long as it runs. The bound is per node, so a node whose requests
run long (or that has stopped answering without being marked down yet) takes only its own connections, never the
healthy nodes'. A request that finds its node's connections all in use waits ``NODE_POOL_TIMEOUT`` seconds, then
is refused with :class:`PoolFull`: nothing reached the node, so a retry is safe. aiohttp rather than httpx: on
loopback it spends half of httpx's time per request and per streamed chunk (BENCHMARKS.md, stop 14).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import yarl

NODE_CONNECTIONS = 100  # requests in flight at once from this server to one other node
NODE_POOL_TIMEOUT = 5.0  # seconds a request waits for one of them; then PoolFull (it never reached the node)
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to a node; an answer may take as long as an execution


class PoolFull(Exception):
    """Every connection to that node stayed in use for ``NODE_POOL_TIMEOUT`` seconds; nothing was sent."""


class NodePool:
    def __init__(self, per_node: int = NODE_CONNECTIONS, wait: float = NODE_POOL_TIMEOUT) -> None:
        self.per_node = per_node
        self._wait = wait
        self._slots: dict[yarl.URL, asyncio.Semaphore] = {}  # one per node: as many as the operator runs
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        """Made on first use, inside the event loop, as aiohttp requires. The bytes are relayed as they come
        (no decompression), no cookies are kept, and the environment's proxy settings apply as they did with httpx."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),  # the per-node slots bound it
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), trust_env=True)
        return self._session

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """The node's response, its body still to be read, while one of that node's slots is held; redirects are
        answers, not followed. Raises PoolFull, or aiohttp's ClientError when the node did not answer."""
        node = yarl.URL(url).origin()
        slots = self._slots.setdefault(node, asyncio.Semaphore(self.per_node))
        try:
            async with asyncio.timeout(self._wait):
                await slots.acquire()
        except TimeoutError:
            raise PoolFull(f"all {self.per_node} connections of this server to {node} are in use") from None
        try:
            async with self._client().request(method, url, allow_redirects=False, **kwargs) as response:
                yield response
        finally:
            slots.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
