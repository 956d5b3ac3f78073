"""/v1/files"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from cellbox.api.deps import UNTRUSTED_BYTES, After, Order, Project, Svc, list_page
from cellbox.errors import InvalidInput
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.files import FileObject
from cellbox.store.tables import FileRow

router = APIRouter(tags=["files"])
CHUNK = 1 << 20


def file_object(row: FileRow) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose, expires_at=row.expires_at)


async def chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


@router.post("/files")
async def create_file(request: Request, svc: Svc, project: Project) -> FileObject:
    """Multipart ``file`` + ``purpose`` (+ ``expires_after[anchor]``, ``expires_after[seconds]``). The body is parsed
    here, after the key is checked, so an unauthenticated client cannot make the server spool anything."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("send multipart/form-data with a 'file' part and a 'purpose'", "file")
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("the multipart body has no 'file' part", "file")
        if not isinstance(purpose, str):
            raise InvalidInput("'purpose' is required", "purpose")
        seconds = _expiry_seconds(form.get("expires_after[seconds]"))
        row = await svc.files.upload(project, upload.filename or "upload", purpose, chunks(upload), seconds)
    return file_object(row)


def _expiry_seconds(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip().isdigit():
        raise InvalidInput("expires_after[seconds] must be a whole number of seconds", "expires_after")
    return int(value)


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
async def file_content(file_id: str, svc: Svc, project: Project) -> Response:
    """A local file is sent by the server itself; bytes from an object store are relayed a chunk at a time, so a
    512 MiB file never sits in memory. The headers are the same either way."""
    row, content = await svc.files.content(project, file_id)
    media_type = mimetypes.guess_type(row.filename)[0] or "application/octet-stream"
    if isinstance(content, Path):
        return FileResponse(content, media_type=media_type, filename=row.filename, headers=UNTRUSTED_BYTES)
    headers = {**UNTRUSTED_BYTES, "Content-Length": str(row.bytes), "Content-Disposition": _attachment(row.filename)}
    return StreamingResponse(content, media_type=media_type, headers=headers)


def _attachment(filename: str) -> str:
    """As FileResponse writes it: the name as is when it is plain, else percent-encoded UTF-8 (RFC 6266)."""
    quoted = quote(filename)
    return f'attachment; filename="{filename}"' if quoted == filename else f"attachment; filename*=utf-8''{quoted}"


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.files.delete(project, file_id)
    return Deleted(id=file_id, object="file")
