"""SQLAlchemy's aiosqlite driver, with as few trips to the database thread as a transaction needs.

aiosqlite runs every sqlite3 call in the connection's own thread, and each call is a round trip:
a queued function, a thread wake-up, a `call_soon_threadsafe` back, an event-loop wake-up through
its self-pipe -- ~140 us of CPU on these machines, where SQLite answers a one-row SELECT by key
in ~10 us. SQLAlchemy's adapter made four trips per statement (open a cursor, execute, fetch the
rows, close the cursor) and three more per transaction (BEGIN, COMMIT, and a ROLLBACK when the
pool takes the connection back, after the COMMIT already ended the transaction).

Here a statement is one trip (`OneTripCursor`: the four calls in one function run in that
thread), BEGIN rides along with the transaction's first statement, and COMMIT or ROLLBACK is a
trip only when a transaction is open. A write transaction of n statements costs n + 1 trips
instead of 4n + 3. Everything else -- the pool, the dialect, aiosqlite's thread and queue -- is
SQLAlchemy's and aiosqlite's as they are. The private names this needs (aiosqlite's queue to its
thread, SQLAlchemy's adapter's cursor class and error translation) are read in
quartchat/adapters/{aiosqlite,sqlalchemy}.py, each with its canary test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_

from ..adapters import aiosqlite as aiosqlite_adapter
from ..adapters import sqlalchemy

_Outcome = tuple[Any, list[Any], int, int | None, bool]


def _run(
    connection: aiosqlite.Connection, begin: str, operation: str, parameters: Any, many: bool
) -> _Outcome:
    """In the connection's thread: a pending BEGIN, the statement, its rows, and what the cursor
    and the connection say after it."""
    sqlite = aiosqlite_adapter.sqlite_connection(connection)
    cursor = sqlite.cursor()
    try:
        if begin:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid, sqlite.in_transaction
    finally:
        cursor.close()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """Knows whether a transaction is open or about to be, so that it can skip needless trips."""

    __slots__ = ("in_transaction", "pending_begin")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.pending_begin = ""  # sent with the next statement
        self.in_transaction = False  # as sqlite3 said after the last trip

    def begin(self, statement: str) -> None:
        """Start a transaction with `statement` (BEGIN or BEGIN IMMEDIATE) on the next trip."""
        self.pending_begin = statement

    def commit(self) -> None:
        self.pending_begin = ""  # a transaction that ran no statement has nothing to commit
        if self.in_transaction:
            super().commit()
            self.in_transaction = False

    def rollback(self) -> None:
        self.pending_begin = ""
        if self.in_transaction:
            super().rollback()
            self.in_transaction = False


class OneTripCursor(sqlalchemy.PrefetchedCursor):
    """A cursor whose statement is one round trip to the connection's thread (`_run` opens and
    closes its own driver cursor there)."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        super().__init__(adapt_connection)
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        self._trip(operation, seq_of_parameters, many=True)

    def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        adapted = cast(OneTripConnection, self.adapted_connection)
        connection: aiosqlite.Connection = self.driver_connection
        begin, adapted.pending_begin = adapted.pending_begin, ""
        try:
            outcome: _Outcome = await_(
                aiosqlite_adapter.run_in_thread(
                    connection, _run, connection, begin, operation, parameters, many
                )
            )
        except Exception as error:
            # Whether the failed statement left a transaction open is unknown here: assume it
            # did, so that the ROLLBACK that follows is sent.
            adapted.in_transaction = True
            sqlalchemy.raise_translated(adapted, error)
        self._description, rows, self._rowcount, self._lastrowid, adapted.in_transaction = outcome
        self.set_rows(rows)


sqlalchemy.use_cursor_class(OneTripConnection, OneTripCursor)


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """What `create_async_engine(..., module=...)` takes as the driver module."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, sqlalchemy.driver_connection(adapted))


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
