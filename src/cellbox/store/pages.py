"""Cursor pagination in OpenAI's shape: ``limit``, ``order`` by creation, ``after`` an item id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from cellbox.errors import InvalidInput

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    has_more: bool


async def paginate(session: AsyncSession, query: Select[Any], model: Any, limit: int, order: Order,
                   after: str | None) -> Page:
    """Rows of ``query`` strictly after the item ``after`` in creation order, at most ``limit`` of them."""
    if after is not None:
        # Looked up within the same query, so a cursor never names another project's (or parent's) row.
        cursor = (await session.execute(query.with_only_columns(model.seq).where(model.id == after))).scalar()
        if cursor is None:
            raise InvalidInput(f"unknown cursor: no item with id {after!r}", "after")
        query = query.where(model.seq > cursor if order == "asc" else model.seq < cursor)
    query = query.order_by(model.seq.asc() if order == "asc" else model.seq.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    return Page(rows[:limit], len(rows) > limit)
