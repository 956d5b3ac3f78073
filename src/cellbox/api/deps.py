"""Request dependencies: the services, the caller's project (auth + rate limit), pagination."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Query, Request
from fastapi.security import HTTPBearer

from cellbox.schemas.common import ListPage, Wire
from cellbox.services.remote import NODE_TOKEN, ON_BEHALF_OF
from cellbox.services.wiring import Services

W = TypeVar("W", bound=Wire | dict[str, Any])


async def services(request: Request) -> Services:
    """Async although it awaits nothing: FastAPI runs a plain ``def`` dependency in a worker thread, and that
    hand-off cost 0.75 ms on every request (BENCHMARKS.md, stop 8)."""
    return request.app.state.services  # type: ignore[no-any-return]


class _KeyProject(HTTPBearer):
    """The caller's project, from the bearer key: auth and the rate limit, on every request (a server of the
    cluster names the project it works for beside the node token instead). A security scheme, so
    /docs offers an Authorize button, read in one step: as a plain dependency with a Header parameter and an
    HTTPBearer beneath it, FastAPI spent 0.2 ms a request solving it (BENCHMARKS.md, stop 8)."""

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        svc: Services = request.app.state.services
        if svc.keys.peer(request.headers.get(NODE_TOKEN)) and (peer_for := request.headers.get(ON_BEHALF_OF)):
            request.state.project = peer_for  # a server of the cluster, for a project (services/remote.py)
            return peer_for
        owner = await svc.keys.project_for(request.headers.get("authorization"))
        request.state.project = owner  # for the access log
        svc.rate_limiter.check(owner)
        return owner


project = _KeyProject(auto_error=False, scheme_name="HTTPBearer",
                      description="An API key from `cellbox keys create` (any key in open mode)")


# Headers for bytes a tenant chose (file contents): a browser opening one never runs it as a page of this origin
# (an .html a container wrote would otherwise reach the API with the viewer's credentials in open mode).
UNTRUSTED_BYTES = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}

Svc = Annotated[Services, Depends(services)]
Project = Annotated[str, Depends(project)]
Order = Annotated[Literal["asc", "desc"], Query()]
After = Annotated[str | None, Query()]


def _id(item: Wire | dict[str, Any]) -> str:
    return str(item["id"] if isinstance(item, dict) else item.id)  # type: ignore[attr-defined]


def list_page(data: list[W], has_more: bool) -> ListPage[W]:
    """OpenAI's list envelope (of models, or of stored item dicts). The spec types first_id/last_id as strings,
    so an empty page sends ""."""
    return ListPage(data=data, first_id=_id(data[0]) if data else "", last_id=_id(data[-1]) if data else "",
                    has_more=has_more)
