"""Unfinished responses are failed by the server that ran them when it starts again, or by any other once that
server is lost; never those another live server is running."""

from __future__ import annotations

from sqlalchemy import select

from cellbox.services.history import History
from cellbox.store.db import Database
from cellbox.store.tables import ResponseRow


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
    assert await here.fail_unfinished(["node_there"]) == 1  # once that server is lost
    assert await states(db) == {
        "resp_1": ("failed", "the server restarted while this response ran; create it again"),
        "resp_2": ("failed", "the server running this response was lost; create it again"),
        "resp_3": ("completed", None),
    }
