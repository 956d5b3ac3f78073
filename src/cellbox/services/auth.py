"""API keys: each belongs to a project; only a SHA-256 of the key is stored. And a per-key rate limit."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque

from sqlalchemy import func, select

from cellbox.errors import InvalidInput, RateLimited, Unauthenticated
from cellbox.ids import now
from cellbox.store.db import Database
from cellbox.store.tables import ApiKey

OPEN_PROJECT = "default"


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
    """Who is calling: a key's project, or the open local mode when no key exists at all."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, str] = {}
        self.open_mode = False

    async def start(self, seed: str) -> None:
        async with self._db.session() as session, session.begin():
            for key, project in parse_seed(seed).items():
                await session.merge(ApiKey(hash=hash_key(key), project=project, created_at=now()))
        self.open_mode = not await self.count()

    async def count(self) -> int:
        async with self._db.session() as session:
            return int((await session.execute(select(func.count()).select_from(ApiKey))).scalar_one())

    async def create(self, project: str) -> str:
        """A new key for ``project``; the key itself is returned once and never stored."""
        if not project.strip():
            raise InvalidInput("a project name is required", "project")
        key = "cb-" + secrets.token_urlsafe(32)
        async with self._db.session() as session, session.begin():
            session.add(ApiKey(hash=hash_key(key), project=project.strip(), created_at=now()))
        return key

    async def project_for(self, authorization: str | None) -> str:
        if self.open_mode:
            return OPEN_PROJECT
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'.")
        digest = hash_key(token.strip())
        project = self._cache.get(digest)
        if project is None:
            async with self._db.session() as session:
                project = (await session.execute(select(ApiKey.project).where(ApiKey.hash == digest))).scalar()
            if project is None:
                raise Unauthenticated("Incorrect API key provided.")
            self._cache[digest] = project
        return project


class RateLimiter:
    """A sliding one-minute window per key; 0 requests per minute means no limit."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> None:
        if not self.per_minute:
            return
        clock = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= clock - 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            raise RateLimited(f"Rate limit reached: {self.per_minute} requests per minute.",
                              retry_after=max(1, int(hits[0] + 60 - clock) + 1))
        hits.append(clock)
