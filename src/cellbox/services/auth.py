"""API keys: each belongs to a project; only a SHA-256 of the key is stored. And a per-project rate limit.

What the keys say is read again every ``RECHECK`` seconds, so a key made with `cellbox keys create` while the
server runs takes effect at once-ish: an open-mode server starts requiring keys within seconds, and a key revoked by
`cellbox keys revoke` (another process) stops working within seconds. A revoke in this process is at once.

Open mode exists only on a loopback bind. A server bound beyond loopback whose last key is revoked does not fall
back to it (a direct client can send any Host header, so the Host check alone could not keep it local): it
refuses every request until a key exists again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque

from sqlalchemy import bindparam, func, select

from cellbox.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from cellbox.ids import now
from cellbox.store.db import Database
from cellbox.store.tables import ApiKey

log = logging.getLogger(__name__)

OPEN_PROJECT = "default"
RECHECK = 5.0  # seconds a key count or a key's project is trusted without asking the database again
KEY_ID_LENGTH = 12  # hex characters of a key's hash shown as its id
CACHED_KEYS = 1024  # known keys remembered between reads; the least recently read goes first beyond that
_PROJECT_OF = select(ApiKey.project).where(ApiKey.hash == bindparam("digest"))  # built once: it runs often


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_seed(text: str) -> dict[str, str]:
    """'key1=projA,key2=projB' -> {key: project}."""
    seeds: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, project = item.partition("=")
        if not sep or not key.strip() or not project.strip():
            raise InvalidInput(f"CELLBOX_API_KEYS entry {item.split('=')[0][:4]}... must look like 'key=project'")
        seeds[key.strip()] = project.strip()
    return seeds


class Keys:
    """Who is calling: a key's project, or the open local mode while no key exists at all."""

    def __init__(self, db: Database, *, open_allowed: bool = True, node_token: str = "") -> None:
        self._db = db
        self._open_allowed = open_allowed  # False beyond loopback: no keys then means no access at all
        self._node_token = node_token.encode()
        self._projects: dict[str, tuple[str, float]] = {}  # digest -> (project, when read); known keys, oldest first
        self._keyless: tuple[bool, float] = (False, -RECHECK)

    async def start(self, seed: str) -> None:
        async with self._db.session() as session, session.begin():
            for key, project in parse_seed(seed).items():
                await session.merge(ApiKey(hash=hash_key(key), project=project, created_at=now()))

    async def count(self) -> int:
        async with self._db.session() as session:
            return int((await session.execute(select(func.count()).select_from(ApiKey))).scalar_one())

    async def open_mode(self) -> bool:
        """True while no key exists on a loopback-only server: every caller is the one local project."""
        return self._open_allowed and await self._no_keys()

    async def _no_keys(self) -> bool:
        keyless, read_at = self._keyless
        if time.monotonic() - read_at >= RECHECK:
            keyless = not await self.count()
            if keyless and not self._open_allowed and not self._keyless[0]:
                log.warning("no API key is left and this server is bound beyond loopback: it refuses every "
                            "request until `cellbox keys create` makes one")
            self._keyless = (keyless, time.monotonic())
        return keyless

    async def create(self, project: str) -> str:
        """A new key for ``project``; the key itself is returned once and never stored."""
        if not project.strip():
            raise InvalidInput("a project name is required", "project")
        key = "cb-" + secrets.token_urlsafe(32)
        async with self._db.session() as session, session.begin():
            session.add(ApiKey(hash=hash_key(key), project=project.strip(), created_at=now()))
        return key

    async def list(self) -> list[tuple[str, str, int]]:
        """Every key as (id, project, created_at); the id is the start of its hash (the key is never stored)."""
        async with self._db.session() as session:
            rows = (await session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars()
            return [(row.hash[:KEY_ID_LENGTH], row.project, row.created_at) for row in rows]

    async def revoke(self, key_id: str) -> str:
        """Delete the one key whose id (or hash) starts with ``key_id``; its project. A server notices within
        a few seconds (it re-reads keys)."""
        if len(key_id) < 6:
            raise InvalidInput("give at least 6 characters of the key id", "key_id")
        async with self._db.session() as session, session.begin():
            rows = list((await session.execute(select(ApiKey).where(ApiKey.hash.startswith(key_id.lower())))).scalars())
            if len(rows) != 1:
                raise (NotFound(f"no key with id {key_id}", "key_id") if not rows else
                       InvalidInput(f"{len(rows)} keys start with {key_id}: give more of the id", "key_id"))
            await session.delete(rows[0])
        self._projects.pop(rows[0].hash, None)
        return rows[0].project

    def peer(self, token: str | None) -> bool:
        """Whether a request carrying ``token`` (its node token header) comes from a server of this cluster: False
        without one, an error for a wrong one."""
        if token is None:
            return False
        if not self._node_token or not hmac.compare_digest(token.encode(), self._node_token):
            raise Unauthenticated("Incorrect node token: the servers of a cluster share one CELLBOX_NODE_TOKEN.")
        return True

    async def project_for(self, authorization: str | None) -> str:
        if await self._no_keys():
            if self._open_allowed:
                return OPEN_PROJECT
            raise Unauthenticated("This server has no API keys and is not bound to loopback only, so it answers "
                                  "no one: its operator must create a key (`cellbox keys create --project NAME`).")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
        digest = hash_key(token.strip())
        project, read_at = self._projects.get(digest, ("", -RECHECK))
        if time.monotonic() - read_at >= RECHECK:
            async with self._db.session() as session:
                found = (await session.execute(_PROJECT_OF, {"digest": digest})).scalar()
            if found is None:
                self._projects.pop(digest, None)
                raise Unauthenticated("Incorrect API key provided.")
            project = found
            self._remember(digest, project)
        return project

    def _remember(self, digest: str, project: str) -> None:
        self._projects.pop(digest, None)  # to the end: the most recently read
        self._projects[digest] = (project, time.monotonic())
        while len(self._projects) > CACHED_KEYS:
            del self._projects[next(iter(self._projects))]

    @property
    def cached(self) -> int:
        """How many keys are remembered (for tests and diagnostics)."""
        return len(self._projects)


class RateLimiter:
    """A sliding one-minute window per project; 0 requests per minute means no limit. Keyed by project (never by
    what a caller sends), so new headers buy no new budget; windows that empty are dropped, so memory stays
    bounded by the projects active in the last two minutes."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._swept = time.monotonic()

    def check(self, project: str) -> None:
        if not self.per_minute:
            return
        clock = time.monotonic()
        hits = self._hits.setdefault(project, deque())
        while hits and hits[0] <= clock - 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            raise RateLimited(f"Rate limit reached: {self.per_minute} requests per minute.",
                              retry_after=max(1, int(hits[0] + 60 - clock) + 1))
        hits.append(clock)
        if clock - self._swept >= 60:  # at most once a minute: drop the windows of projects idle for a minute
            self._swept = clock
            for idle in [p for p, window in self._hits.items() if window[-1] <= clock - 60]:
                del self._hits[idle]

    @property
    def tracked(self) -> int:
        """How many projects have a window (for tests and diagnostics)."""
        return len(self._hits)
