"""File bytes on disk, one file per id, written atomically (temp file, fsync, rename)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

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
            with open(temp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"the file is larger than the {limit}-byte upload limit", "file")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.rename(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return size

    def read(self, blob_id: str) -> bytes:
        try:
            return self.path(blob_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such blob: {blob_id}") from None

    def delete(self, blob_id: str) -> None:
        self.path(blob_id).unlink(missing_ok=True)
