"""/v1/conversations: create, retrieve, update and delete conversations, and list, add, retrieve and delete their
items, per project."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from cellbox.api.deps import After, Order, Project, Svc, list_page
from cellbox.api.routes.responses import include_of
from cellbox.schemas.common import Deleted, ListPage
from cellbox.schemas.conversations import AddItems, Conversation, CreateConversation, UpdateConversation
from cellbox.services.responses import shown
from cellbox.store.tables import ConversationRow

router = APIRouter(tags=["conversations"])


def _conversation(row: ConversationRow) -> Conversation:
    return Conversation(id=row.id, created_at=row.created_at, metadata=row.meta or {})


@router.post("/conversations")
async def create_conversation(body: CreateConversation, svc: Svc, project: Project) -> Conversation:
    items = await svc.responses.stored_items(project, body.items)
    return _conversation(await svc.conversations.create(project, items, body.metadata or {}))


@router.get("/conversations/{conversation_id}")
async def retrieve_conversation(conversation_id: str, svc: Svc, project: Project) -> Conversation:
    return _conversation(await svc.conversations.get(project, conversation_id))


@router.post("/conversations/{conversation_id}")
async def update_conversation(conversation_id: str, body: UpdateConversation, svc: Svc,
                              project: Project) -> Conversation:
    return _conversation(await svc.conversations.update(project, conversation_id, body.metadata))


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, svc: Svc, project: Project) -> Deleted:
    await svc.conversations.delete(project, conversation_id)
    return Deleted(id=conversation_id, object="conversation.deleted")


@router.get("/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str, request: Request, svc: Svc, project: Project, order: Order = "desc", after: After = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListPage[dict[str, Any]]:
    include = include_of(request)
    page = await svc.conversations.list_items(project, conversation_id, limit, order, after)
    return list_page([shown(row.body, include) for row in page.rows], page.has_more)


@router.post("/conversations/{conversation_id}/items")
async def add_items(conversation_id: str, body: AddItems, request: Request, svc: Svc,
                    project: Project) -> ListPage[dict[str, Any]]:
    include = include_of(request)
    await svc.conversations.get(project, conversation_id)  # a 404 before any item is looked at
    added = await svc.conversations.add(project, conversation_id, await svc.responses.stored_items(project,
                                                                                                   body.items))
    return list_page([shown(item, include) for item in added], False)


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: str, item_id: str, request: Request, svc: Svc,
                        project: Project) -> dict[str, Any]:
    return shown(await svc.conversations.get_item(project, conversation_id, item_id), include_of(request))


@router.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, svc: Svc, project: Project) -> Conversation:
    return _conversation(await svc.conversations.delete_item(project, conversation_id, item_id))
