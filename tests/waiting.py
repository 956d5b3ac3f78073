"""Waiting for an event the test cannot be told about directly (a file appearing, a server noticing a key): poll
until it holds. The bound only turns a defect (it never happens) into a failure; it is sized for a slow, loaded
machine and nothing about how long the wait took is ever asserted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
PATIENCE = 120.0  # seconds


def until(predicate: Callable[[], T], what: str, pause: float = 0.05) -> T:
    """The predicate's first truthy value."""
    deadline = time.monotonic() + PATIENCE
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(pause)
    return value
