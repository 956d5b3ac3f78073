"""File bytes on disk, one file per id, written atomically (temp file, fsync, rename). Disk I/O runs in worker
threads: a slow disk or a 512 MiB file never stalls the event loop."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from cellbox.errors import NotFound, TooLarge

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Blobs:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        if not _ID.match(blob_id):
            raise NotFound(f"no such blob: {blob_id}")
        return self.directory / blob_id

    async def write(self, blob_id: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Store the chunks under ``blob_id``; nothing is left behind if they exceed ``limit`` or fail."""
        target = self.path(blob_id)
        temp = self.directory / f".{secrets.token_hex(8)}.tmp"
        size = 0
        try:
            f = await asyncio.to_thread(open, temp, "wb")
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"the file is larger than the {limit}-byte upload limit", "file")
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

    def delete(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
