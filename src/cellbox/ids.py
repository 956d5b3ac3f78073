"""Prefixed identifiers in OpenAI's shapes, and the clock."""

import secrets
import time


def new_id(prefix: str, hex_chars: int = 48) -> str:
    return prefix + secrets.token_hex(hex_chars // 2)


def container_id() -> str:
    return new_id("cntr_", 48)


def now() -> int:
    """Unix seconds, the unit of every ``*_at`` field."""
    return int(time.time())
