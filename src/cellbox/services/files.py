"""The Files API: uploads stored as blobs, metadata per project."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import bindparam, select

from cellbox.errors import InvalidInput, NotFound
from cellbox.ids import file_id, now
from cellbox.sandbox.workspace import safe_filename
from cellbox.schemas.files import UPLOAD_PURPOSES
from cellbox.services.metrics import Metrics
from cellbox.store.blobs import BlobStore, Content
from cellbox.store.db import Database
from cellbox.store.pages import Order, Page, paginate
from cellbox.store.tables import FileRow, built, columns

_FILE = select(*columns(FileRow)).where(FileRow.id == bindparam("fid"), FileRow.project == bindparam("project"))


class Files:
    def __init__(self, db: Database, blobs: BlobStore, max_upload: int, metrics: Metrics | None = None) -> None:
        self._metrics = metrics or Metrics()
        self._db = db
        self.blobs = blobs
        self.max_upload = max_upload

    async def upload(self, project: str, filename: str, purpose: str, chunks: AsyncIterator[bytes],
                     expires_after_seconds: int | None = None) -> FileRow:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidInput(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", "purpose")
        if expires_after_seconds is not None and not 3600 <= expires_after_seconds <= 2592000:
            raise InvalidInput("expires_after[seconds] must be between 3600 and 2592000", "expires_after")
        new_id, created = file_id(), now()
        size = await self.blobs.write(new_id, chunks, self.max_upload)
        row = FileRow(id=new_id, project=project, filename=safe_filename(filename), purpose=purpose, bytes=size,
                      created_at=created,
                      expires_at=created + expires_after_seconds if expires_after_seconds else None)
        try:
            async with self._db.session() as session, session.begin():
                session.add(row)
        except BaseException:
            await self.blobs.delete(new_id)
            raise
        self._metrics.uploaded(size)
        return row

    async def get(self, project: str, fid: str) -> FileRow:
        found = await self._db.lookup(_FILE, {"fid": fid, "project": project})
        row = built(FileRow, found) if found is not None else None
        if row is None or (row.expires_at is not None and row.expires_at <= now()):
            raise NotFound(f"No such File object: {fid}", "file_id")
        return row

    async def list(self, project: str, limit: int, order: Order, after: str | None,
                   purpose: str | None) -> Page:
        query = select(FileRow).where(FileRow.project == project)
        if purpose:
            query = query.where(FileRow.purpose == purpose)
        async with self._db.session() as session:
            return await paginate(session, query, FileRow, limit, order, after)

    async def content(self, project: str, fid: str) -> tuple[FileRow, Content]:
        row = await self.get(project, fid)
        return row, await self.blobs.open(row.id)

    async def read(self, project: str, fid: str) -> tuple[FileRow, bytes]:
        row = await self.get(project, fid)
        return row, await self.blobs.read(row.id)

    async def delete(self, project: str, fid: str) -> None:
        """The bytes go first: a store that fails leaves a file a retry can delete, never an orphaned object."""
        row = await self.get(project, fid)
        await self.blobs.delete(row.id)
        async with self._db.session() as session, session.begin():
            await session.delete(await session.merge(row))
