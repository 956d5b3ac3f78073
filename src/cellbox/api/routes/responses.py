"""/v1/responses: create (JSON or server-sent events), retrieve, delete, and list a response's input items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from cellbox.api.answers import answer
from cellbox.api.deps import After, Order, Project, Svc, list_page
from cellbox.api.sse import event
from cellbox.errors import InvalidInput
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.responses import INCLUDABLE, CreateResponse
from cellbox.services.responses import Run, shown, shown_event, shown_response

router = APIRouter(tags=["responses"])


def include_of(request: Request) -> list[str]:
    """The SDK sends ``include[]=...``; curl users write ``include=...``."""
    include = request.query_params.getlist("include[]") + request.query_params.getlist("include")
    unknown = [name for name in include if name not in INCLUDABLE]
    if unknown:
        raise InvalidInput(f"unknown include value(s) {unknown}", "include")
    return include


async def _sse(events: AsyncIterator[dict[str, Any]], include: list[str]) -> AsyncIterator[bytes]:
    async for item in events:
        yield event(item["type"], shown_event(item, include))


def _streaming(events: AsyncIterator[dict[str, Any]], include: list[str]) -> StreamingResponse:
    """Events come whole; each stream shows them with its own ``include`` (a replay's is the GET's)."""
    return StreamingResponse(_sse(events, include), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/responses", response_model=None)
async def create_response(body: CreateResponse, svc: Svc, project: Project) -> JSONResponse | StreamingResponse:
    if body.background:
        run: Run = await svc.responses.start(project, body)
        queued = await svc.background.start(run)
        if not body.stream:
            return answer(shown_response(queued, body.include))
        return _streaming(await svc.background.stream(project, run.response.id), body.include)
    if not body.stream:
        return answer(await svc.responses.create(project, body))
    run = await svc.responses.start(project, body)  # a bad request is a plain 4xx, before the stream
    return _streaming(svc.responses.events(run), body.include)


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(response_id: str, request: Request, svc: Svc, project: Project,
                            stream: Annotated[bool, Query()] = False,
                            starting_after: Annotated[int, Query(ge=-1)] = -1) -> JSONResponse | StreamingResponse:
    """A stored response; one running in the background as it stands now, or (``stream=true``) its events after
    ``starting_after``, then the rest as they come."""
    include = include_of(request)
    if stream:
        return _streaming(await svc.background.stream(project, response_id, starting_after), include)
    live = svc.background.snapshot(project, response_id)
    return answer(shown_response(live, include) if live is not None
                  else await svc.responses.get(project, response_id, include))


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.responses.delete(project, response_id)
    return Deleted(id=response_id, object="response")


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, svc: Svc, project: Project) -> dict[str, Any]:
    """Stop a background response (its running code is interrupted); a streamed one stops when its client hangs
    up instead."""
    return shown_response(await svc.background.cancel(project, response_id), [])


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, request: Request, svc: Svc, project: Project, order: Order = "desc", after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListPage[dict[str, Any]]:
    include = include_of(request)
    page = await svc.responses.input_items(project, response_id, limit, order, after)
    return list_page([shown(row.body, include) for row in page.rows], page.has_more)
