"""The database: one async engine and session factory, its schema migrated at start.

SQLAlchemy's errors are translated here, where they enter, so no caller sees them: a row that refers to one
deleted meanwhile (a foreign key) is NotFound; a database that is locked or unreachable is StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Executable, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from cellbox.errors import InvalidInput, NotFound, StoreUnavailable
from cellbox.store import migrations
from cellbox.store.sqlite import OneHopDBAPI

log = logging.getLogger(__name__)
T = TypeVar("T")

# Held for the migration's transaction, so replicas starting together on PostgreSQL migrate one after another.
_MIGRATION_LOCK = 0x63656C6C626F78  # "cellbox"
MIGRATION_WAIT = 120  # seconds a starting server waits for another's migration (SQLite)
BUSY_WAIT = 5  # seconds a statement waits for SQLite's write lock (sqlite3's default), then StoreUnavailable


@contextlib.contextmanager
def translated() -> Any:
    """Domain errors for the database's own (``raise ... from``, so the log keeps the original)."""
    try:
        yield
    except IntegrityError as exc:
        text = str(exc.orig).lower()
        if "foreign key" in text:
            raise NotFound("the container or file this refers to was deleted meanwhile") from exc
        raise InvalidInput("a concurrent request changed the same object; try again") from exc
    except OperationalError as exc:
        raise StoreUnavailable("the database is busy or unreachable; try again") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("the connection to the database was lost; try again") from exc
        raise


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")  # a reader that cannot write, whatever it is handed
    cursor.execute("PRAGMA busy_timeout=1000")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        # SQLite through aiosqlite: one worker-thread hop per statement (store/sqlite.py) instead of six a session.
        driver = {"module": OneHopDBAPI()} if url.startswith("sqlite+aiosqlite") else {}
        self.engine = create_async_engine(url, pool_pre_ping=not url.startswith("sqlite"), **driver)
        if url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)
        self._reader_engine: Engine | None = None
        self._writer_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        if url.startswith("sqlite+aiosqlite:///"):
            # Point lookups on this thread: an indexed read of a WAL database takes microseconds, the hop to
            # aiosqlite's thread and back far more on a busy machine (BENCHMARKS.md, stop 10).
            self._reader_engine = create_engine(url.replace("+aiosqlite", "", 1), poolclass=StaticPool)
            event.listen(self._reader_engine, "connect", _reader_pragmas)
            # Writes of a few statements in one hop to a thread of their own, rather than one hop per statement
            # and a session's bookkeeping around them (BENCHMARKS.md, stop 12). One thread: SQLite takes one
            # writer at a time anyway, and a write waiting for the lock holds up no upload or scan.
            self._writer_engine = create_engine(url.replace("+aiosqlite", "", 1))
            event.listen(self._writer_engine, "connect", _sqlite_pragmas)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="cellbox-db-writer")

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose failures, including its commit's, arrive as domain errors."""
        with translated():
            async with self._sessions() as session:
                yield session

    async def lookup(self, statement: Executable, parameters: dict[str, Any]) -> RowMapping | None:
        """The one row a Core read by key finds, or None. On SQLite it runs here, on the event loop's thread, in a
        read-only connection of its own; elsewhere as any read would."""
        with translated():
            if self._reader_engine is not None:
                with self._reader_engine.connect() as connection:
                    return connection.execute(statement, parameters).mappings().first()
            async with self.engine.connect() as connection:
                return (await connection.execute(statement, parameters)).mappings().first()

    async def write(self, work: Callable[[Connection], T]) -> T:
        """``work``'s statements (Core, on a plain connection) in one transaction. On SQLite the whole of it
        runs in one worker-thread hop; elsewhere on the async engine, as any session would."""
        with translated():
            if self._writer_engine is not None and self._writer is not None:
                return await asyncio.get_running_loop().run_in_executor(self._writer, self._write,
                                                                        self._writer_engine, work)
            async with self.engine.begin() as connection:
                return await connection.run_sync(work)

    @staticmethod
    def _write(engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.begin() as connection:
            return work(connection)

    async def migrate(self) -> None:
        """Bring the schema to this release's, in one transaction that waits for any other process doing the same
        (SQLite: a write lock taken at once; PostgreSQL: an advisory lock)."""
        with translated():
            async with self.engine.begin() as connection:
                sqlite = self.engine.dialect.name == "sqlite"
                if sqlite:  # replicas starting together wait their turn, however slow the machine
                    await connection.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_WAIT * 1000}")
                    await connection.exec_driver_sql("BEGIN IMMEDIATE")
                elif self.engine.dialect.name == "postgresql":
                    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                try:
                    before, now = await connection.run_sync(migrations.upgrade)
                finally:
                    if sqlite:  # the pooled connection goes back to the usual wait
                        await connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_WAIT * 1000}")
        if before not in (None, now):  # a new database, or one from before migrations, is not news
            log.info("database schema migrated from revision %s to %s", before, now)

    async def aclose(self) -> None:
        if self._writer is not None:
            await asyncio.to_thread(self._writer.shutdown)  # the writes under way end first
        for engine in (self._reader_engine, self._writer_engine):
            if engine is not None:
                engine.dispose()
        await self.engine.dispose()
