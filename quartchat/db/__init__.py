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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

SQLITE_PRAGMAS = (
    # Takes effect on a new file only (migrate.py converts older ones): deleted data's pages go
    # back to the system at `PRAGMA incremental_vacuum`, so the file does not only ever grow.
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
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
    if is_sqlite(url) and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
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
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Transactions on the app's engine. Use `write()` for anything that changes data."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine.url)

    @classmethod
    def open(cls, url: URL, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection, connection.begin():
            yield connection

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that may write; on SQLite it holds the write lock from its start."""
        async with self.engine.connect() as connection:
            await connection.execution_options(quartchat_write=True)
            async with connection.begin():
                yield connection

    async def close(self) -> None:
        await self.engine.dispose()
