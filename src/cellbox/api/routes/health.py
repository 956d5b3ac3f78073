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
        **({"isolation": svc.engine.isolation(), "warm_pool": svc.engine.warm_pool(), "egress": svc.egress.describe()}
           if svc.nodes.runs_containers else {"isolation": "none here: this api server's containers run on nodes"}),
        "node": {"id": svc.nodes.id, "role": svc.nodes.role, "state": svc.nodes.state},
    }
