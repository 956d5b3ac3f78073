"""Where file bytes live: the ``BlobStore`` seam, and its default, a local directory (one file per id, written
atomically: temp file, fsync, rename). Disk I/O runs in worker threads: a slow disk or a 512 MiB file never stalls
the event loop. The S3-compatible store is in store/s3.py."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol

from cellbox.errors import NotFound, TooLarge

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Content = Path | AsyncIterator[bytes]
"""A blob to send: a local file (the server sends it itself, ranges and all) or chunks streamed from elsewhere."""


def checked(blob_id: str) -> str:
    """The id, if it can name a blob (no path separators, no dots); a stranger one is simply not there."""
    if not _ID.match(blob_id):
        raise NotFound(f"no such blob: {blob_id}")
    return blob_id


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"the file is larger than the {limit}-byte upload limit", "file")


class BlobStore(Protocol):
    """File bytes by id. Every implementation leaves nothing behind from a write that failed or went over its limit,
    raises NotFound for a blob that is not there and StoreUnavailable when the store cannot be used."""

    async def start(self) -> None:
        """Check that the store can be used, so a misconfiguration fails at start, not at the first upload."""

    async def write(self, blob_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Store the chunks under ``blob_id``; returns their size."""

    async def read(self, blob_id: str) -> bytes: ...

    async def open(self, blob_id: str) -> Content:
        """The blob, to send to a client; NotFound now, before any byte is sent."""

    async def delete(self, blob_id: str) -> None:
        """Remove the blob; one already gone is no error."""


class LocalBlobs:
    """Blobs as files in one directory of this node."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        return self.directory / checked(blob_id)

    async def start(self) -> None:
        """Nothing to check: the directory was made when the store was."""

    async def write(self, blob_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        target = self.path(blob_id)
        temp = self.directory / f".{secrets.token_hex(8)}.tmp"
        size = 0
        try:
            f = await asyncio.to_thread(open, temp, "wb")
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise too_large(limit)
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(_sync, f)
            finally:
                f.close()
            os.rename(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return size

    async def read(self, blob_id: str) -> bytes:
        try:
            return await asyncio.to_thread(self.path(blob_id).read_bytes)
        except FileNotFoundError:
            raise NotFound(f"no such blob: {blob_id}") from None

    async def open(self, blob_id: str) -> Path:
        path = self.path(blob_id)
        if not path.is_file():
            raise NotFound(f"no such blob: {blob_id}")
        return path

    async def delete(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
