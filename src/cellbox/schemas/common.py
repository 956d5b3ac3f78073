"""Shapes every endpoint shares: the list envelope, deletion receipts, the error envelope."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, model_serializer

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
