"""The Conversations API: a conversation object, and the bodies that create it, change it and add items to it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cellbox.schemas.common import Metadata, Request, Wire
from cellbox.schemas.responses import InputItem

MAX_ITEMS = 20  # OpenAI's limit, at creation and per call that adds items


class CreateConversation(Request):
    items: Annotated[list[InputItem], Field(max_length=MAX_ITEMS)] = Field(default_factory=list)
    metadata: Metadata | None = None


class UpdateConversation(Request):
    metadata: Metadata


class AddItems(Request):
    items: Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]


class Conversation(Wire):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)
