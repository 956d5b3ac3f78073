"""Stored responses: what ``GET /v1/responses/{id}`` returns, what ``previous_response_id`` continues from, and
the input items ``/input_items`` lists. Outputs are always stored whole; callers hide them unless included."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession

from cellbox.errors import NotFound
from cellbox.store.db import Database
from cellbox.store.pages import Order, Page, paginate
from cellbox.store.tables import ResponseItemRow, ResponseRow, StoredItemRow, built, columns

log = logging.getLogger(__name__)
MAX_CHAIN = 10_000  # previous_response_id links followed at most (guards against a cycle in a damaged store)
_INSERT = insert(ResponseRow.__table__)
_INPUT = insert(ResponseItemRow.__table__)
_STORED = insert(StoredItemRow.__table__)
UNFINISHED = ("queued", "in_progress")
# A response another server gave up for lost has ended ("failed"): a late finish does not change that.
_FINISH = (update(ResponseRow.__table__).where(ResponseRow.__table__.c.id == bindparam("rid"),
                                               ResponseRow.__table__.c.status.in_(UNFINISHED))
           .values(status=bindparam("status"), body=bindparam("body")))
_EXISTS = select(ResponseRow.__table__.c.status).where(ResponseRow.__table__.c.id == bindparam("rid"))
LOST_WHY = "the server running this response was lost; create it again"
_RESPONSE = select(*columns(ResponseRow)).where(ResponseRow.id == bindparam("rid"),
                                                ResponseRow.project == bindparam("project"))


@dataclass
class Context:
    """Everything earlier in a conversation, oldest first: input and output items, and the exact text each code
    run gave the model (so a continued conversation shows the model what it saw the first time)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    tool_results: dict[str, str] = field(default_factory=dict)


async def fail(session: AsyncSession, which: ColumnElement[bool], why: str) -> int:
    """Within ``session``'s transaction: the unfinished responses ``which`` selects end ``failed``, saying
    ``why``. The sweep that gives a server up calls it in its own transaction, so none is left running."""
    rows = list((await session.execute(select(ResponseRow).where(
        ResponseRow.status.in_(UNFINISHED), which))).scalars())
    for row in rows:
        response = {**row.body["response"], "status": "failed", "error": {"code": "server_error", "message": why}}
        row.status, row.body = "failed", {**row.body, "response": response}
    return len(rows)


class History:
    def __init__(self, db: Database, node_id: str) -> None:
        self._db = db
        self._node_id = node_id  # the server that runs the responses it begins

    # A stored response costs one write (a plain POST: `record`) or two (streamed or in the background: `begin`,
    # then `finish`), each a few plain statements in one transaction and one hop (BENCHMARKS.md, stops 8 and 12).

    async def begin(self, project: str, response: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
        """A response as it starts, so it can be retrieved (and continued from, or failed at a restart) while it
        runs."""
        await self._db.write(lambda c: self._insert(c, project, response, inputs, {}))

    async def finish(self, project: str, response: dict[str, Any], tool_results: dict[str, str]) -> None:
        """The end of a response that :meth:`begin` stored."""
        rid, outputs = response["id"], response.get("output") or []

        def work(connection: Connection) -> None:
            done = connection.execute(_FINISH, {"rid": rid, "status": response["status"],
                                                "body": {"response": response, "tool_results": tool_results}})
            if not done.rowcount:
                ended = connection.execute(_EXISTS, {"rid": rid}).scalar()
                if ended is None:
                    raise NoResultFound(f"no stored response {rid}")  # deleted meanwhile, as a read would have found
                log.warning("response %s ended %s meanwhile (its server was given up for lost); kept so", rid, ended)
                return
            self._items(connection, project, rid, outputs)

        await self._db.write(work)

    async def record(self, project: str, response: dict[str, Any], inputs: list[dict[str, Any]],
                     tool_results: dict[str, str]) -> None:
        """A whole response at once: one that nobody could see before it ended (it was not streamed)."""
        await self._db.write(lambda c: self._insert(c, project, response, inputs, tool_results))

    def _insert(self, connection: Connection, project: str, response: dict[str, Any], inputs: list[dict[str, Any]],
                tool_results: dict[str, str]) -> None:
        rid = response["id"]
        connection.execute(_INSERT, {
            "id": rid, "project": project, "created_at": response["created_at"], "status": response["status"],
            "previous_response_id": response.get("previous_response_id"), "node_id": self._node_id,
            "body": {"response": response, "tool_results": tool_results}})
        if inputs:
            connection.execute(_INPUT, [{"id": item["id"], "response_id": rid, "body": item} for item in inputs])
        self._items(connection, project, rid, inputs + (response.get("output") or []))

    @staticmethod
    def _items(connection: Connection, project: str, rid: str, items: list[dict[str, Any]]) -> None:
        """Items findable by id for ``item_reference`` inputs."""
        if items:
            connection.execute(_STORED, [{"id": item["id"], "project": project, "response_id": rid, "body": item}
                                         for item in items])

    async def fail_unfinished(self) -> int:
        """At start: the responses this server left queued or in progress when it stopped (and those from before
        servers were recorded) end ``failed`` and say why."""
        ran_here = (ResponseRow.node_id == self._node_id) | ResponseRow.node_id.is_(None)
        async with self._db.session() as session, session.begin():
            return await fail(session, ran_here, "the server restarted while this response ran; create it again")

    async def discard(self, rid: str) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(delete(ResponseItemRow).where(ResponseItemRow.response_id == rid))
            await session.execute(delete(StoredItemRow).where(StoredItemRow.response_id == rid))
            await session.execute(delete(ResponseRow).where(ResponseRow.id == rid))

    async def _row(self, project: str, rid: str, param: str = "response_id") -> ResponseRow:
        found = await self._db.lookup(_RESPONSE, {"rid": rid, "project": project})
        row = built(ResponseRow, found) if found is not None else None
        if row is None:
            raise NotFound(f"Response with id '{rid}' not found.", param)
        return row

    async def get(self, project: str, rid: str) -> dict[str, Any]:
        return dict((await self._row(project, rid)).body["response"])

    async def delete(self, project: str, rid: str) -> None:
        await self._row(project, rid)
        await self.discard(rid)

    async def context(self, project: str, rid: str) -> Context:
        """The conversation up to and including response ``rid``; a deleted ancestor ends the chain there."""
        chain: list[tuple[ResponseRow, list[dict[str, Any]]]] = []
        seen: set[str] = set()
        next_id: str | None = rid
        while next_id and next_id not in seen and len(chain) < MAX_CHAIN:
            seen.add(next_id)
            try:
                row = await self._row(project, next_id, "previous_response_id")
            except NotFound:
                if not chain:
                    raise
                break
            async with self._db.session() as session:
                inputs = [r.body for r in (await session.execute(select(ResponseItemRow).where(
                    ResponseItemRow.response_id == row.id).order_by(ResponseItemRow.seq))).scalars()]
            chain.append((row, inputs))
            next_id = row.previous_response_id
        context = Context()
        for row, inputs in reversed(chain):
            context.items += inputs + list(row.body["response"].get("output") or [])
            context.tool_results.update(row.body.get("tool_results") or {})
        return context

    async def find_items(self, project: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Stored items of the project by id (the newest, where an id repeats)."""
        if not ids:
            return {}
        async with self._db.session() as session:
            rows = (await session.execute(select(StoredItemRow).where(
                StoredItemRow.project == project, StoredItemRow.id.in_(ids)).order_by(StoredItemRow.seq))).scalars()
            return {row.id: dict(row.body) for row in rows}

    async def input_items(self, project: str, rid: str, limit: int, order: Order, after: str | None) -> Page:
        await self._row(project, rid)
        query = select(ResponseItemRow).where(ResponseItemRow.response_id == rid)
        async with self._db.session() as session:
            return await paginate(session, query, ResponseItemRow, limit, order, after)
