"""The database: one async engine per app (opened while serving), and its transactions.

SQLite is the zero-config default, a file in `DATA_DIR`; `DATABASE_URL=postgresql+asyncpg://…`
switches to PostgreSQL. The same Core statements run on both. On SQLite, every connection gets
WAL (readers never block the writer), `synchronous=NORMAL` (durable at checkpoints, safe with
WAL), a busy timeout (a writer waits for the lock instead of failing), and foreign keys. Python's
sqlite3 driver would start transactions itself, lazily, on the first write -- so a transaction
that reads, then writes, takes the write lock only half-way and can lose an update made by
another process in between, or fail with "database is locked" on the upgrade. Here SQLAlchemy
emits BEGIN itself: `read()` begins DEFERRED, `write()` begins IMMEDIATE (the write lock first,
so a read-then-write transaction is serialised against every other writer).

Transactions survive the cancellation of their task. Quart cancels a request's handler when its
client hangs up, and a cancellation that lands while a connection is being opened, BEGIN waits
for the write lock, or COMMIT runs, used to leave an SQLite connection holding the write lock
with nobody to release it: every other writer then failed with "database is locked" after its
busy timeout, for tens of seconds (seen under a burst of logins whose clients gave up). So
opening (connect + BEGIN) and ending (COMMIT or ROLLBACK, then back to the pool) run to
completion in tasks of their own, and so does each statement (a statement cancelled mid-way
made SQLAlchemy drop its aiosqlite connection, which at times kept the lock); the cancellation is
delivered once they are done, and the transaction then rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..datadir import private_database
from . import sqlite
from .tx import Tx
from .writer import PostgresWriter, SQLiteWriter

T = TypeVar("T")

POOL_SIZE = 15

SQLITE_PRAGMAS = (
    # First, so the others wait for a lock as long as any statement does (the driver's own
    # default is 5 s). None of these needs the write lock on a file that is already set up: a
    # connection can be opened while another holds it. (auto_vacuum, which does, is migrate.py's.)
    "PRAGMA busy_timeout=10000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def database_url(url: str | None, data_dir: Path) -> URL:
    """`DATABASE_URL`, or the SQLite file in `DATA_DIR`."""
    if url:
        return make_url(url)
    return make_url(f"sqlite+aiosqlite:///{data_dir / 'quartchat.db'}")


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite, with the pragmas and the BEGIN control described above."""
    if is_sqlite(url) and url.database and url.database != ":memory:" and "uri" not in url.query:
        private_database(Path(url.database))  # the file 0600 before SQLite makes it 0644
    # A fixed pool, no overflow: SQLAlchemy's default (5, and 10 more) closes every connection
    # beyond the fifth as it comes back, so under load each transaction could open a connection
    # -- on SQLite a new aiosqlite thread, the file and the pragmas; on PostgreSQL a backend
    # process. Past POOL_SIZE, transactions wait for a connection (at most `pool_timeout`).
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", 0)
    if is_sqlite(url):
        kwargs["module"] = sqlite.dbapi()  # fewer trips to its thread (db/sqlite.py)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        sync = engine.sync_engine

        @event.listens_for(sync, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # the driver issues no BEGIN of its own
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(sync, "begin")
        def _begin(connection: Connection) -> None:
            immediate = connection.get_execution_options().get("quartchat_write", False)
            driver = cast(sqlite.OneTripConnection, connection.connection.dbapi_connection)
            # Sent with the transaction's first statement, in the same trip to its thread.
            driver.begin("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class _Connection(AsyncConnection):
    """Statements that run to their end when the task awaiting them is cancelled."""

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await _to_completion(super().execute(*args, **kwargs))

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return await _to_completion(super().exec_driver_sql(*args, **kwargs))

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return await _to_completion(super().scalar(*args, **kwargs))

    async def run_sync(self, *args: Any, **kwargs: Any) -> Any:  # db.tx.run_in's statements
        return await _to_completion(super().run_sync(*args, **kwargs))


class Database:
    """Transactions on the app's engine. Use `write()`, or `run(work)` (db/tx.py), for anything
    that changes data."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine.url)
        self._writes = 0  # write() transactions of this process, opening or open
        self._no_writes = asyncio.Event()
        self._no_writes.set()
        self.writer: SQLiteWriter | PostgresWriter
        if self.sqlite:
            path = engine.url.database or ""
            self.writer = SQLiteWriter(path, engine.dialect, SQLITE_PRAGMAS)
        else:
            self.writer = PostgresWriter(self.write)

    def time_writes(self, observe: Callable[[float], None]) -> None:
        """Tell `observe` how many seconds each batched write transaction (`run`) took."""
        self.writer.timed = observe

    @classmethod
    def open(cls, url: URL, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=False) as connection:
            yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that may write; on SQLite it holds the write lock from its start."""
        async with self._transaction(write=True) as connection:
            yield connection

    async def writers_first(self) -> None:
        """Wait until no `write()` transaction of this process is waiting for the lock or open.

        A bulk job (an import) calls this between its short transactions. On SQLite a writer
        that finds the lock taken polls for it with sleeps of up to 100 ms, and a bulk job that
        takes the lock back a moment after releasing it would win nearly every time: other
        users' writes would wait for the whole job. Writes through `run(work)` need no such
        turn: they queue with the job's own works on the writer."""
        await self._no_writes.wait()

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[AsyncConnection]:
        if write:
            self._writes += 1
            self._no_writes.clear()
        try:
            connection = await _to_completion(self._open(write), _discard)
            try:
                yield connection
            except BaseException:
                await _to_completion(_end(connection, commit=False))
                raise
            await _to_completion(_end(connection, commit=True))
        finally:
            if write:
                self._writes -= 1
                if not self._writes:
                    self._no_writes.set()

    async def run(self, work: Callable[[Tx], T]) -> T:
        """`work(tx)`, all or nothing, committed when this returns (db/tx.py), maybe in one
        transaction with other works waiting at the same moment (db/writer.py)."""
        return await self.writer.run(work)

    async def _open(self, write: bool) -> AsyncConnection:
        connection = await _Connection(self.engine).start()
        try:
            if write:
                await connection.execution_options(quartchat_write=True)
            await connection.begin()
        except BaseException:
            await connection.close()
            raise
        return connection

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()


async def _end(connection: AsyncConnection, commit: bool) -> None:
    """COMMIT or ROLLBACK, and the connection back to the pool (closed, if it went bad)."""
    try:
        if commit:
            await connection.commit()
        else:
            with suppress(Exception):  # already failing; a rollback that fails too adds nothing
                await connection.rollback()
    finally:
        await connection.close()


async def _discard(connection: AsyncConnection) -> None:
    await _end(connection, commit=False)


async def _to_completion(
    work: Coroutine[Any, Any, T],
    undo: Callable[[T], Coroutine[Any, Any, None]] | None = None,
) -> T:
    """Await `work` in a task of its own, to its end even if the caller is cancelled meanwhile;
    then deliver the cancellation, after `undo` of the result (a connection nobody will use)."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.cancelled():  # the work itself was cancelled (the loop is closing)
                raise
            cancelled = error  # ours: wait on; even when the work ended at this very moment
    result = task.result()  # the work's own exception, if it failed
    if cancelled is not None:
        if undo is not None:
            await _to_completion(undo(result))
        raise cancelled
    return result
