"""Conversations: a project's named, ordered lists of items that responses read as context and append to.

Items are stored whole, in the shape responses store their inputs and outputs (code outputs included; callers
hide them unless asked with ``include``). An item id appears at most once per conversation: adding one that is
already there keeps the first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from cellbox.errors import NotFound
from cellbox.ids import conversation_id, now
from cellbox.store.db import Database
from cellbox.store.pages import Order, Page, paginate
from cellbox.store.tables import ConversationItemRow, ConversationRow


class Conversations:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, project: str, items: list[dict[str, Any]], metadata: dict[str, str]) -> ConversationRow:
        row = ConversationRow(id=conversation_id(), project=project, created_at=now(), meta=metadata)
        async with self._db.session() as session, session.begin():
            session.add(row)
            await session.flush()
            session.add_all(self._rows(row.id, items, set()))
        return row

    async def get(self, project: str, cid: str, param: str = "conversation_id") -> ConversationRow:
        async with self._db.session() as session:
            row = (await session.execute(select(ConversationRow).where(
                ConversationRow.id == cid, ConversationRow.project == project))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"Conversation with id '{cid}' not found.", param)
        return row

    async def update(self, project: str, cid: str, metadata: dict[str, str]) -> ConversationRow:
        row = await self.get(project, cid)
        async with self._db.session() as session, session.begin():
            stored = await session.get(ConversationRow, row.seq)
            if stored is None:
                raise NotFound(f"Conversation with id '{cid}' not found.", "conversation_id")
            stored.meta = metadata
        row.meta = metadata
        return row

    async def delete(self, project: str, cid: str) -> None:
        await self.get(project, cid)
        async with self._db.session() as session, session.begin():
            await session.execute(delete(ConversationItemRow).where(ConversationItemRow.conversation_id == cid))
            await session.execute(delete(ConversationRow).where(ConversationRow.id == cid))

    # --- items -------------------------------------------------------------------------------------------------

    @staticmethod
    def _rows(cid: str, items: list[dict[str, Any]], present: set[str]) -> list[ConversationItemRow]:
        rows = []
        for item in items:
            if item["id"] in present:
                continue
            present.add(item["id"])
            rows.append(ConversationItemRow(id=item["id"], conversation_id=cid, body=item))
        return rows

    async def items(self, project: str, cid: str) -> list[dict[str, Any]]:
        """Every item, oldest first: the context of a response in this conversation."""
        await self.get(project, cid, "conversation")
        async with self._db.session() as session:
            rows = (await session.execute(select(ConversationItemRow).where(
                ConversationItemRow.conversation_id == cid).order_by(ConversationItemRow.seq))).scalars()
            return [dict(row.body) for row in rows]

    async def add(self, project: str, cid: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append items (those whose id is already there are skipped); the ones added."""
        await self.get(project, cid)
        async with self._db.session() as session, session.begin():
            present = set((await session.execute(select(ConversationItemRow.id).where(
                ConversationItemRow.conversation_id == cid,
                ConversationItemRow.id.in_([i["id"] for i in items])))).scalars())
            rows = self._rows(cid, items, present)
            session.add_all(rows)
        return [row.body for row in rows]

    async def list_items(self, project: str, cid: str, limit: int, order: Order, after: str | None) -> Page:
        await self.get(project, cid)
        query = select(ConversationItemRow).where(ConversationItemRow.conversation_id == cid)
        async with self._db.session() as session:
            return await paginate(session, query, ConversationItemRow, limit, order, after)

    async def get_item(self, project: str, cid: str, item_id: str) -> dict[str, Any]:
        await self.get(project, cid)
        async with self._db.session() as session:
            row = (await session.execute(select(ConversationItemRow).where(
                ConversationItemRow.conversation_id == cid, ConversationItemRow.id == item_id))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"Item with id '{item_id}' not found in conversation '{cid}'.", "item_id")
        return dict(row.body)

    async def delete_item(self, project: str, cid: str, item_id: str) -> ConversationRow:
        row = await self.get(project, cid)
        await self.get_item(project, cid, item_id)
        async with self._db.session() as session, session.begin():
            await session.execute(delete(ConversationItemRow).where(
                ConversationItemRow.conversation_id == cid, ConversationItemRow.id == item_id))
        return row
