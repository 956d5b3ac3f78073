"""/v1/models: the model names this server routes, as OpenAI-compatible clients expect to list them."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from cellbox.api.deps import Project, Svc
from cellbox.errors import NotFound
from cellbox.schemas.common import Wire

router = APIRouter(tags=["models"])


class Model(Wire):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str


class ModelList(Wire):
    object: Literal["list"] = "list"
    data: list[Model]


async def _known(svc: Svc) -> list[Model]:
    """The aliases' names first (they are what clients ask for), then what the model server says it serves."""
    names = {name: "cellbox" for name in svc.upstream.aliases if name != "*"}
    for name in await svc.upstream.models():
        names.setdefault(name, "upstream")
    return [Model(id=name, owned_by=owner) for name, owner in names.items()]


@router.get("/models")
async def list_models(svc: Svc, project: Project) -> ModelList:
    return ModelList(data=await _known(svc))


@router.get("/models/{model}")
async def retrieve_model(model: str, svc: Svc, project: Project) -> Model:
    for known in await _known(svc):
        if known.id == model:
            return known
    raise NotFound(f"The model '{model}' does not exist or is not routed by this server.", "model")
