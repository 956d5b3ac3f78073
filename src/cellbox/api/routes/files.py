"""/v1/files"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from cellbox.api.deps import After, Order, Project, Svc, list_page
from cellbox.errors import TooLarge
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.files import FileObject
from cellbox.store.tables import FileRow

router = APIRouter(tags=["files"])
CHUNK = 1 << 20


def file_object(row: FileRow) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose, expires_at=row.expires_at)


def check_length(request: Request, limit: int) -> None:
    """Refuse an oversized upload before reading it."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + (1 << 20):
        raise TooLarge(f"the upload is larger than the {limit}-byte limit", "file")


async def chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("/files")
async def create_file(
    request: Request, svc: Svc, project: Project,
    file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()],
    expires_anchor: Annotated[str | None, Form(alias="expires_after[anchor]")] = None,
    expires_seconds: Annotated[int | None, Form(alias="expires_after[seconds]")] = None,
) -> FileObject:
    check_length(request, svc.files.max_upload)
    row = await svc.files.upload(project, file.filename or "upload", purpose, chunks(file), expires_seconds)
    return file_object(row)


@router.get("/files")
async def list_files(
    svc: Svc, project: Project, order: Order = "desc", after: After = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000, purpose: Annotated[str | None, Query()] = None,
) -> ListPage[FileObject]:
    page = await svc.files.list(project, limit, order, after, purpose)
    data = [file_object(r) for r in page.rows]
    return list_page(data, page.has_more)


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, svc: Svc, project: Project) -> FileObject:
    return file_object(await svc.files.get(project, file_id))


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, svc: Svc, project: Project) -> FileResponse:
    row, path = await svc.files.content_path(project, file_id)
    media_type = mimetypes.guess_type(row.filename)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, filename=row.filename)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.files.delete(project, file_id)
    return Deleted(id=file_id, object="file")
