"""Server-sent events: ``event:`` and ``data:`` lines, one JSON object per event."""

from __future__ import annotations

import json
from typing import Any


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
