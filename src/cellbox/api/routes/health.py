"""/health: liveness and which isolation layers are active."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cellbox import __version__
from cellbox.api.deps import Svc

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(svc: Svc) -> dict[str, Any]:
    return {
        "status": "ok",
        "version": __version__,
        "auth": "open (no API keys; loopback only)" if await svc.keys.open_mode() else "api keys",
        "isolation": svc.engine.isolation(),
        "warm_pool": svc.engine.warm_pool(),
        "egress": svc.egress.describe(),
        "node": {"id": svc.nodes.id, "state": svc.nodes.state},
    }
