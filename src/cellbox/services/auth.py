"""API keys: each belongs to a project; only a SHA-256 of the key is stored. And a per-project rate limit.

What the keys say is read again every ``RECHECK`` seconds, so a key made with `cellbox keys create` while the
server runs takes effect at once-ish: an open-mode server starts requiring keys within seconds, and a key revoked by
`cellbox keys revoke` (another process) stops working within seconds. A revoke in this process is at once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque

from sqlalchemy import bindparam, func, select

from cellbox.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from cellbox.ids import now
from cellbox.store.db import Database
from cellbox.store.tables import ApiKey

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

    def __init__(self, db: Database) -> None:
        self._db = db
        self._projects: dict[str, tuple[str, float]] = {}  # digest -> (project, when read); known keys, oldest first
        self._open: tuple[bool, float] = (False, -RECHECK)

    async def start(self, seed: str) -> None:
        async with self._db.session() as session, session.begin():
            for key, project in parse_seed(seed).items():
                await session.merge(ApiKey(hash=hash_key(key), project=project, created_at=now()))

    async def count(self) -> int:
        async with self._db.session() as session:
            return int((await session.execute(select(func.count()).select_from(ApiKey))).scalar_one())

    async def open_mode(self) -> bool:
        """True while no key exists: every caller is the one local project."""
        is_open, read_at = self._open
        if time.monotonic() - read_at >= RECHECK:
            is_open = not await self.count()
            self._open = (is_open, time.monotonic())
        return is_open

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

    async def project_for(self, authorization: str | None) -> str:
        if await self.open_mode():
            return OPEN_PROJECT
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
