"""Keys and the rate limiter: keys remembered boundedly, a revoked key stops working; a window per project,
bounded memory."""

from __future__ import annotations

import pytest

from cellbox.errors import RateLimited, Unauthenticated
from cellbox.services import auth
from cellbox.services.auth import RECHECK, Keys, RateLimiter, hash_key
from cellbox.store.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth.time, "monotonic", fake)
    return fake


def test_the_window_is_per_project_and_slides(clock: Clock) -> None:
    limiter = RateLimiter(2)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimited) as raised:
        limiter.check("a")
    assert raised.value.retry_after == 61
    limiter.check("b")
    clock.now += 60
    limiter.check("a")


def test_idle_projects_are_forgotten(clock: Clock) -> None:
    limiter = RateLimiter(10)
    for i in range(1000):
        limiter.check(f"project-{i}")
    clock.now += 61
    limiter.check("busy")
    assert limiter.tracked == 1


def test_no_limit_tracks_nothing(clock: Clock) -> None:
    limiter = RateLimiter(0)
    for i in range(100):
        limiter.check(f"p{i}")
    assert limiter.tracked == 0


async def test_a_key_revoked_by_this_process_stops_working_at_once(db: Database, clock: Clock) -> None:
    keys = Keys(db)
    key = await keys.create("team")
    assert await keys.project_for(f"Bearer {key}") == "team"  # remembered from now on
    await keys.revoke(hash_key(key)[:12])
    with pytest.raises(Unauthenticated):
        await keys.project_for(f"Bearer {key}")  # the clock has not moved: no re-read needed


async def test_a_key_revoked_elsewhere_stops_working_once_the_keys_are_read_again(db: Database,
                                                                                  clock: Clock) -> None:
    serving, cli = Keys(db), Keys(db)  # the server's view, and `cellbox keys revoke` in another process
    key = await cli.create("team")
    await cli.create("others")  # a key remains: the server stays out of open mode
    assert await serving.project_for(f"Bearer {key}") == "team"
    await cli.revoke(hash_key(key)[:12])
    clock.now += RECHECK
    with pytest.raises(Unauthenticated):
        await serving.project_for(f"Bearer {key}")
    assert serving.cached == 0


async def test_the_remembered_keys_are_bounded_and_unknown_keys_are_never_remembered(
        db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CACHED_KEYS", 3)
    keys = Keys(db)
    made = [await keys.create(f"p{i}") for i in range(6)]
    for _ in range(2):
        for i, key in enumerate(made):
            assert await keys.project_for(f"Bearer {key}") == f"p{i}"
            assert keys.cached <= 3
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await keys.project_for("Bearer cb-not-a-key")
    assert keys.cached == 3


async def test_revoking_the_last_key_of_a_server_bound_beyond_loopback_opens_nothing(db: Database,
                                                                                   clock: Clock) -> None:
    keys = Keys(db, open_allowed=False)  # `cellbox serve --host 0.0.0.0`
    key = await keys.create("team")
    assert await keys.project_for(f"Bearer {key}") == "team"
    await Keys(db).revoke(hash_key(key)[:12])  # `cellbox keys revoke` in another process: no key is left
    clock.now += RECHECK
    assert not await keys.open_mode()
    for authorization in (None, "Bearer anything", f"Bearer {key}"):
        with pytest.raises(Unauthenticated, match="no API keys"):
            await keys.project_for(authorization)
    fresh = await Keys(db).create("team")
    clock.now += RECHECK
    assert await keys.project_for(f"Bearer {fresh}") == "team"


async def test_a_loopback_server_without_keys_is_open(db: Database, clock: Clock) -> None:
    keys = Keys(db, open_allowed=True)
    assert await keys.open_mode()
    assert await keys.project_for(None) == auth.OPEN_PROJECT


def test_a_peer_is_known_by_the_cluster_token_only(db: Database) -> None:
    keys = Keys(db, node_token="t" * 32)
    assert keys.peer(None) is False  # not a peer: the key decides
    assert keys.peer("t" * 32) is True
    for wrong in ("t" * 31, "u" * 32, ""):
        with pytest.raises(Unauthenticated, match="Incorrect node token"):
            keys.peer(wrong)
    with pytest.raises(Unauthenticated, match="Incorrect node token"):
        Keys(db).peer("")  # a server without a token has no peers: any token is wrong
