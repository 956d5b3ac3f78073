"""Stored responses: written whole at once (a plain POST) or begun then finished (streamed, background), each
write all or nothing; unfinished ones are failed by the server that ran them when it starts again, or by any
other once that server is lost, never those another live server is running."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import NoResultFound

from cellbox.errors import NotFound
from cellbox.services.history import LOST_WHY, History, fail
from cellbox.store.db import Database
from cellbox.store.tables import ResponseItemRow, ResponseRow, StoredItemRow


async def states(db: Database) -> dict[str, tuple[str, str | None]]:
    async with db.session() as session:
        rows = (await session.execute(select(ResponseRow))).scalars()
        return {r.id: (r.status, (r.body["response"].get("error") or {}).get("message")) for r in rows}


async def test_each_server_fails_its_own_unfinished_responses_only(db: Database) -> None:
    here, there = History(db, "node_here"), History(db, "node_there")
    for history, rid, status in ((here, "resp_1", "in_progress"), (there, "resp_2", "queued"),
                                 (there, "resp_3", "completed")):
        await history.begin("p", {"id": rid, "created_at": 1, "status": status}, [])
    assert await here.fail_unfinished() == 1  # at its start: its own only, the other server's still run
    assert (await states(db))["resp_2"] == ("queued", None)
    async with db.session() as session, session.begin():  # once that server is lost (the sweep's transaction)
        assert await fail(session, ResponseRow.node_id.in_(["node_there"]), LOST_WHY) == 1
    assert await states(db) == {
        "resp_1": ("failed", "the server restarted while this response ran; create it again"),
        "resp_2": ("failed", "the server running this response was lost; create it again"),
        "resp_3": ("completed", None),
    }


def message(mid: str, text: str) -> dict[str, Any]:
    return {"id": mid, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def counts(db: Database) -> tuple[int, int, int]:
    async with db.session() as session:
        return tuple([(await session.execute(select(func.count()).select_from(table))).scalar_one()  # type: ignore[return-value]
                      for table in (ResponseRow, ResponseItemRow, StoredItemRow)])


async def test_a_whole_response_is_recorded_in_one_write_and_reads_back_as_begun_and_finished(db: Database) -> None:
    history = History(db, "node_here")
    said, answered = message("msg_in", "hello"), {"id": "msg_out", "type": "message", "role": "assistant"}
    await history.record("proj", {"id": "resp_whole", "created_at": 1, "status": "completed", "output": [answered]},
                         [said], {"ci_1": "3"})
    await history.begin("proj", {"id": "resp_parts", "created_at": 2, "status": "in_progress", "output": []}, [said])
    await history.finish("proj", {"id": "resp_parts", "created_at": 2, "status": "completed", "output": [answered]},
                         {"ci_1": "3"})
    for rid in ("resp_whole", "resp_parts"):
        assert (await history.get("proj", rid))["status"] == "completed"
        context = await history.context("proj", rid)
        assert context.items == [said, answered]
        assert context.tool_results == {"ci_1": "3"}
        assert [row.id for row in (await history.input_items("proj", rid, 20, "asc", None)).rows] == ["msg_in"]
    assert set(await history.find_items("proj", ["msg_in", "msg_out"])) == {"msg_in", "msg_out"}
    with pytest.raises(NotFound):
        await history.get("another_project", "resp_whole")


async def test_a_failed_write_leaves_nothing_behind(db: Database) -> None:
    history = History(db, "node_here")
    await history.record("proj", {"id": "resp_1", "created_at": 1, "status": "completed", "output": []},
                         [message("msg_1", "a")], {})
    before = await counts(db)
    # The same item twice in one response's inputs breaks a unique constraint after the response's row went in.
    with pytest.raises(Exception, match="concurrent request"):
        await history.record("proj", {"id": "resp_2", "created_at": 2, "status": "completed", "output": []},
                             [message("msg_2", "b"), message("msg_2", "b")], {})
    assert await counts(db) == before
    with pytest.raises(NoResultFound):  # finishing one that was deleted meanwhile adds none of its outputs
        await history.finish("proj", {"id": "resp_gone", "created_at": 3, "status": "completed",
                                      "output": [message("msg_3", "c")]}, {})
    assert await counts(db) == before
