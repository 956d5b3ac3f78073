"""/metrics: Prometheus's text format, behind the API keys like everything else (a scraper sends a bearer key;
in open local mode it needs none)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from cellbox.api.deps import Project, Svc

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc, project: Project) -> Response:
    return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
