"""A write transaction as one function: `Database.run(work)` calls `work(tx)` and commits.

A turn of a conversation is three short write transactions (the send, a checkpoint, the final
write) of one to five statements each. Through SQLAlchemy's async engine every statement is a
round of its own -- a task, a greenlet switch, an execution context, a trip to aiosqlite's thread
and back through the event loop -- and on SQLite the write lock is held across all those rounds,
while the loop is busy with every stream: 200 turns starting together waited ~1 s for their first
chunk, and the database work cost ~3 ms of CPU a turn, more than the 200 chunks of its reply
cost to relay (bench/conversations_bench.py; docs/benchmarks.md, "Conversations").

`work` is plain synchronous code over `Tx`, so it can run where the database is, maybe in one
transaction with other works waiting at the same moment (db/writer.py):

- SQLite: in the writer's thread, on its own connection: BEGIN IMMEDIATE, `work`, COMMIT (or its
  rollback, if it raised).
- PostgreSQL: inside `AsyncConnection.run_sync`, each statement handed to asyncpg itself (still
  a round trip to the server, which has no thread to hand the work to).

Either way the statements are SQLAlchemy Core statements compiled once for the dialect, with
SQLAlchemy's own type processors for their parameters and rows; only their execution skips the
engine. The transaction runs to its end when the task awaiting it is cancelled (the
cancellation is delivered after), as every transaction here does (db/__init__.py).

This relies on some of SQLAlchemy's private names (compiled statements' processors, its asyncpg
adapter's transaction), read in quartchat/adapters/sqlalchemy.py with their canary tests; and
tests/db/test_tx.py compares the rows read and the values stored with the engine's own, on both
databases.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import await_

from ..adapters import sqlalchemy

P = ParamSpec("P")
T = TypeVar("T")


class Tx(Protocol):
    """What a transaction's work can do: run a statement, and read the rows it returns."""

    def rows(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> Sequence[Any]:
        """The rows of `statement` (a SELECT, or a write with RETURNING); each has its columns
        as attributes and by position."""
        ...

    def run(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> None:
        """Run a write."""
        ...

    def run_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a write (without RETURNING) once per row, as one statement or one round trip."""
        ...


class _Compiled:
    """A statement compiled once for a dialect, with its parameter order and type processors."""

    __slots__ = ("binds", "compiled", "names", "result", "row", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: tuple[str, ...]) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys)))
        # A column default or onupdate that SQLAlchemy computes in Python while executing would
        # be skipped here: refuse such a statement rather than write a NULL.
        if compiled.insert_prefetch or compiled.update_prefetch:
            raise ValueError(f"{statement!r} needs SQLAlchemy's execution-time defaults")
        self.compiled = compiled
        self.sql = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.binds = sqlalchemy.bind_processors(compiled)
        columns = sqlalchemy.result_columns(compiled)
        self.result = [sqlalchemy.result_processor(type_, dialect) for _, type_ in columns]
        row = namedtuple("Row", [key for key, _ in columns], rename=True)  # type: ignore[misc]
        self.row: Callable[[Iterable[Any]], Any] = row._make

    def parameters(self, given: Mapping[str, Any]) -> list[Any]:
        # Every value through its processor, None too, as the engine does: JSON's writes
        # None as the JSON text 'null', and a row must be stored the same by either path.
        values = self.compiled.construct_params(dict(given))
        binds = self.binds
        return [binds[name](values[name]) if name in binds else values[name] for name in self.names]

    def rows(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        make, processors = self.row, self.result
        return [
            make([v if p is None else p(v) for p, v in zip(processors, r, strict=True)])
            for r in raw
        ]


# Compiled statements, the most recently used last. Bounded: the key holds its statement, so a
# statement built per call (rather than once, at module level) would otherwise add an entry per
# call, for ever. Past the bound the least recently used is dropped (and compiled again if it
# comes back); the module-level statements of every work together are far fewer than this.
COMPILED_CACHE_SIZE = 1024
_COMPILED: OrderedDict[tuple[str, ClauseElement, tuple[str, ...]], _Compiled] = OrderedDict()
_COMPILED_LOCK = threading.Lock()


def _compiled_for(
    statement: ClauseElement, parameters: Mapping[str, Any], dialect: Dialect
) -> _Compiled:
    """`statement` compiled for `dialect` and these parameter names, once while it is in use."""
    key = (dialect.name, statement, tuple(sorted(parameters)))
    with _COMPILED_LOCK:  # every SQLite writer's thread, and the event loop's, use it
        found = _COMPILED.get(key)
        if found is not None:
            _COMPILED.move_to_end(key)
            return found
    compiled = _Compiled(statement, dialect, key[2])  # outside the lock: it takes a while
    with _COMPILED_LOCK:
        _COMPILED[key] = compiled
        if len(_COMPILED) > COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)
    return compiled


class SQLiteTx:
    """`Tx` on the sqlite3 connection itself, in its thread. Statements are compiled once per
    set of parameter names: pass the module's prebuilt statements (one made per call is
    compiled on every call)."""

    def __init__(self, connection: sqlite3.Connection, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect

    def rows(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> Sequence[Any]:
        compiled = _compiled_for(statement, parameters, self.dialect)
        cursor = self.connection.execute(compiled.sql, compiled.parameters(parameters))
        try:
            return compiled.rows(cursor.fetchall())
        finally:
            cursor.close()

    def run(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> None:
        compiled = _compiled_for(statement, parameters, self.dialect)
        cursor = self.connection.execute(compiled.sql, compiled.parameters(parameters))
        try:
            cursor.fetchall()  # a RETURNING write's rows, unread: its changes are done once read
        finally:
            cursor.close()

    def run_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = _compiled_for(statement, rows[0], self.dialect)
        self.connection.executemany(compiled.sql, [compiled.parameters(row) for row in rows])


class AsyncpgTx:
    """`Tx` on asyncpg's connection itself (PostgreSQL), inside `AsyncConnection.run_sync`: the
    statements compiled once, as SQLiteTx's, and each handed to asyncpg (`await_` switches out of
    the greenlet `run_sync` made) without SQLAlchemy's execution context, cursor and result
    around it -- ~70 us of CPU a statement of the ~150 us SQLAlchemy's path costs here.

    The transaction stays SQLAlchemy's: BEGIN through its adapter (as its cursor does before a
    first statement), COMMIT or ROLLBACK by the caller's `Database.write()`.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection: Any = sqlalchemy.asyncpg_in_transaction(connection)  # asyncpg's
        self.dialect = connection.dialect

    def rows(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> Sequence[Any]:
        compiled = _compiled_for(statement, parameters, self.dialect)
        return compiled.rows(
            await_(self.connection.fetch(compiled.sql, *compiled.parameters(parameters)))
        )

    def run(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> None:
        compiled = _compiled_for(statement, parameters, self.dialect)
        await_(self.connection.execute(compiled.sql, *compiled.parameters(parameters)))

    def run_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = _compiled_for(statement, rows[0], self.dialect)
        await_(self.connection.executemany(compiled.sql, [compiled.parameters(r) for r in rows]))


class EngineTx:
    """`Tx` on a SQLAlchemy connection, through the engine as any statement: what `run_in`
    hands a work, so that a store function written once over `Tx` also runs in a `read()` or
    `write()` transaction (no twin of it over `AsyncConnection`)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def rows(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> Sequence[Any]:
        return self.connection.execute(cast(Executable, statement), parameters).all()

    def run(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> None:
        self.connection.execute(cast(Executable, statement), parameters)

    def run_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self.connection.execute(cast(Executable, statement), rows)


async def run_in(
    connection: AsyncConnection,
    work: Callable[Concatenate[Tx, P], T],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`work(tx, *args, **kwargs)` in the transaction of `connection` (a `Database.read()` or
    `write()`): the statements through the engine (`EngineTx`), in its greenlet."""
    return await connection.run_sync(lambda sync: work(EngineTx(sync), *args, **kwargs))
