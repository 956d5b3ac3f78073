"""/v1/containers/{container_id}/files"""

from __future__ import annotations

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from cellbox.api.deps import UNTRUSTED_BYTES, After, Order, Project, Svc, list_page
from cellbox.errors import InvalidInput
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.containers import ContainerFile, CreateContainerFileById
from cellbox.services.execution import container_file

router = APIRouter(tags=["container files"])
MAX_PATHS = 100  # paths one listing may ask for, as many as a page holds


@router.post("/containers/{container_id}/files")
async def create_container_file(container_id: str, request: Request, svc: Svc, project: Project) -> ContainerFile:
    """Either multipart with a ``file`` part, or JSON ``{"file_id": ...}`` naming a Files API file."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the multipart body has no 'file' part", "file")
            return container_file(await svc.containers.add_upload(
                project, container_id, upload.filename or "upload", upload.file))
    if content_type.startswith("application/json"):
        try:
            body = CreateContainerFileById.model_validate_json(await request.body())
        except ValidationError as exc:
            raise InvalidInput("the body must be JSON of the form {\"file_id\": \"file-...\"}", "file_id") from exc
        return container_file(await svc.containers.add_file(project, container_id, body.file_id))
    raise InvalidInput("send multipart/form-data with a 'file' part, or JSON with a 'file_id'", "file")


@router.get("/containers/{container_id}/files")
async def list_container_files(
    container_id: str, svc: Svc, project: Project, order: Order = "desc", after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    path: Annotated[list[str] | None, Query(max_length=MAX_PATHS, description=(
        "Cellbox extension: only the files at these paths (`/mnt/data/...`); repeat it for more, up to "
        f"{MAX_PATHS}."))] = None,
) -> ListPage[ContainerFile]:
    page = await svc.containers.list_files(project, container_id, limit, order, after, path)
    data = [container_file(r) for r in page.rows]
    return list_page(data, page.has_more)


@router.get("/containers/{container_id}/files/{file_id}")
async def retrieve_container_file(container_id: str, file_id: str, svc: Svc, project: Project) -> ContainerFile:
    return container_file(await svc.containers.get_file(project, container_id, file_id))


@router.get("/containers/{container_id}/files/{file_id}/content")
async def container_file_content(container_id: str, file_id: str, svc: Svc, project: Project) -> StreamingResponse:
    row, handle = await svc.containers.open_file(project, container_id, file_id)

    def read() -> object:
        with handle:
            while chunk := handle.read(1 << 20):
                yield chunk

    media_type = mimetypes.guess_type(row.path)[0] or "application/octet-stream"
    return StreamingResponse(read(), media_type=media_type, headers=UNTRUSTED_BYTES)  # type: ignore[arg-type]


@router.delete("/containers/{container_id}/files/{file_id}")
async def delete_container_file(container_id: str, file_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.containers.delete_file(project, container_id, file_id)
    return Deleted(id=file_id, object="container.file.deleted")
