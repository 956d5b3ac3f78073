"""Shapes every endpoint shares: the list envelope, deletion receipts, the error envelope."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, model_serializer

T = TypeVar("T")


class Wire(BaseModel):
    """A response object. Fields named in ``omit_when_none`` are left out rather than sent as null,
    for the places where OpenAI's schema does not allow null."""

    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit(self, handler: Any) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (v is None and k in self.omit_when_none)}


class Request(BaseModel):
    """A request body: unknown fields are ignored, as OpenAI's SDK may send newer ones."""

    model_config = ConfigDict(extra="ignore")


def _metadata_limits(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > 16:
        raise ValueError("at most 16 metadata pairs")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"metadata key {key[:64]!r}: keys are at most 64 characters, values at most 512")
    return metadata


Metadata = Annotated[dict[str, str], AfterValidator(_metadata_limits)]
"""OpenAI's metadata: at most 16 pairs, keys of up to 64 characters, values of up to 512."""


class ListPage(Wire, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Deleted(Wire):
    id: str
    object: str
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
