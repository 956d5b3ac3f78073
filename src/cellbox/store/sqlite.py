"""SQLite through aiosqlite in one worker-thread hop per statement, instead of SQLAlchemy's four.

aiosqlite runs each call on its connection's own thread, and each call is a hand-off and a wake-up both ways. Under
SQLAlchemy's adapter a read session made six: create the cursor, execute, fetch, close the cursor, then two
rollbacks (the session's and the pool's reset) of a connection that had no transaction open. On our 2-core VMs a
hand-off costs 0.1-0.5 ms, so a one-row lookup cost about 1 ms where SQLite itself takes 12 µs (BENCHMARKS.md,
stop 8). Here a statement is one hop (execute and fetch together, on the worker thread), and a commit or rollback
with no transaction open is skipped: CPython's ``sqlite3`` does nothing in that case either.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


class _Ran:
    """What one statement left behind: its rows and the cursor attributes SQLAlchemy reads afterwards."""

    __slots__ = ("description", "lastrowid", "rowcount", "rows")

    def __init__(self, cursor: sqlite3.Cursor, fetch: bool) -> None:
        self.description = cursor.description
        self.rows = cursor.fetchall() if fetch and cursor.description else []
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Ran:
    """On the worker thread: the whole statement, start to finish, with a cursor of its own."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        return _Ran(cursor, fetch=not many)
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor: nothing on the worker thread until execute, which brings every row back at once."""

    __slots__ = ("_ran",)

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:  # no hop: no cursor yet
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._ran: _Ran | None = None

    @property
    def description(self) -> Any:
        return self._ran.description if self._ran is not None else None

    @property
    def rowcount(self) -> int:
        return self._ran.rowcount if self._ran is not None else -1

    @property
    def lastrowid(self) -> Any:
        return self._ran.lastrowid if self._ran is not None else None

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None  # the statement's cursor is closed already; the rows stay buffered

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._hop(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._hop(operation, seq_of_parameters, many=True)

    async def _hop(self, operation: Any, parameters: Any, many: bool) -> None:
        driver: aiosqlite.Connection = self._connection
        async with self._adapt_connection._execute_mutex:
            self._ran = await driver._execute(_run, driver._conn, operation, parameters, many)
            self._rows = collections.deque(self._ran.rows)

    def fetchall(self) -> Sequence[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    """Commit and rollback cost a hop only when a transaction is open (``sqlite3`` itself checks the same)."""

    __slots__ = ()
    _cursor_cls = OneHopCursor

    def _idle(self) -> bool:
        connection = self._connection._connection  # the sqlite3 connection; None once closed
        return connection is None or not connection.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite module adapter, handing out :class:`OneHopConnection`\\ s."""

    def __init__(self) -> None:
        super().__init__(aiosqlite, sqlite3)

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        connection = aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter does: a stray connection never blocks exit
        return OneHopConnection(self, await_(connection))
