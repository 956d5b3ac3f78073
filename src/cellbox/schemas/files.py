"""The Files API's objects."""

from __future__ import annotations

from typing import Literal

from cellbox.schemas.common import Wire

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class FileObject(Wire):
    omit_when_none = frozenset({"expires_at"})

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
