"""The rate limiter: a window per project, bounded memory."""

from __future__ import annotations

import pytest

from cellbox.errors import RateLimited
from cellbox.services import auth
from cellbox.services.auth import RateLimiter


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
