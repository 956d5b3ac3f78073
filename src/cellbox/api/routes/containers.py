"""/v1/containers, plus Cellbox's /v1/containers/{id}/execute extension."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, StreamingResponse

from cellbox.api.answers import answer
from cellbox.api.deps import After, Order, Project, Svc, list_page
from cellbox.api.errors import describe
from cellbox.api.sse import event
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.containers import (
    Container,
    CreateContainer,
    EgressUse,
    ExecuteRequest,
    Execution,
    ExpiresAfterOut,
    NetworkPolicyOut,
)
from cellbox.services.execution import Update
from cellbox.store.tables import ContainerRow

router = APIRouter(tags=["containers"])


def container_object(row: ContainerRow, egress: EgressUse | None = None) -> Container:
    policy = (NetworkPolicyOut(type="allowlist", allowed_domains=row.network.allowed_domains)
              if row.network is not None else NetworkPolicyOut())
    return Container(id=row.id, name=row.name, created_at=row.created_at, status=row.status,
                     last_active_at=row.last_active_at, expires_after=ExpiresAfterOut(minutes=row.expiry_minutes),
                     memory_limit=row.memory_limit, network_policy=policy,  # type: ignore[arg-type]
                     egress=egress)


@router.post("/containers")
async def create_container(body: CreateContainer, svc: Svc, project: Project) -> Container:
    row = await svc.containers.create(project, body)
    return container_object(row, svc.containers.egress_use(row.id))


@router.get("/containers")
async def list_containers(
    svc: Svc, project: Project, order: Order = "desc", after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20, name: Annotated[str | None, Query()] = None,
) -> ListPage[Container]:
    page = await svc.containers.list(project, limit, order, after, name)
    data = [container_object(r, svc.containers.egress_use(r.id)) for r in page.rows]
    return list_page(data, page.has_more)


@router.get("/containers/{container_id}")
async def retrieve_container(container_id: str, svc: Svc, project: Project) -> Container:
    row = await svc.containers.get(project, container_id)
    return container_object(row, svc.containers.egress_use(row.id))


@router.delete("/containers/{container_id}")
async def delete_container(container_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.containers.delete(project, container_id)
    return Deleted(id=container_id, object="container.deleted")


async def _sse(updates: AsyncIterator[Update]) -> AsyncIterator[bytes]:
    try:
        async for update in updates:
            if update.item is not None:
                yield event("output", update.item.model_dump())
            elif update.execution is not None:
                yield event("done", update.execution.model_dump())
    except Exception as exc:  # after the stream started, failures travel as an event
        yield event("error", describe(exc)[1])


@router.post("/containers/{container_id}/execute", response_model=None, responses={200: {
    "model": Execution, "description": "The finished execution; with `stream: true`, server-sent events instead: "
    "`output` (a logs or image item) as the code produces it, then `done` (this object) or `error`."}})
async def execute(container_id: str, body: ExecuteRequest, svc: Svc,
                  project: Project) -> JSONResponse | StreamingResponse:
    """Cellbox extension (not an OpenAI path): run code in the container, get ``logs``/``image`` outputs and the
    files the run created or changed; with ``stream: true`` the outputs arrive as server-sent events."""
    if not body.stream:
        return answer(await svc.executions.run(project, container_id, body.code, body.timeout, body.figures))
    await svc.containers.sandbox(project, container_id)  # unknown or expired: a plain 4xx, not a stream
    updates = svc.executions.stream(project, container_id, body.code, body.timeout, body.figures)
    return StreamingResponse(_sse(updates), media_type="text/event-stream")
