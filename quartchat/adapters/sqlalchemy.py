"""SQLAlchemy's private names (SQLAlchemy 2.1.9, pinned to its minor version in pyproject.toml).

db/tx.py runs compiled Core statements itself, with SQLAlchemy's own type processors:
- `SQLCompiler._bind_processors`: parameter name -> the processor of its bound value.
- `SQLCompiler._result_columns`: the result's columns, each with `keyname` and `type`.
- `TypeEngine._cached_result_processor(dialect, coltype)`: a column type's row processor.
- the asyncpg adapter (`AsyncAdapt_asyncpg_connection`): `_transaction` (None outside one),
  `_start_transaction()` (BEGIN, as its cursor does before a first statement) and
  `_connection` (asyncpg's own connection).

db/sqlite.py makes a statement one trip to aiosqlite's thread:
- `AsyncAdapt_dbapi_connection._connection` (the aiosqlite connection),
  `_handle_exception(error)` (raises the DBAPI error SQLAlchemy expects) and `_cursor_cls`
  (the class `cursor()` makes).
- `AsyncAdapt_dbapi_cursor`'s slots `_adapt_connection`, `_connection`, `_rows` (its fetch
  methods read `_rows`) and `_async_soft_close()`: `PrefetchedCursor` sets and overrides them.

(`Row._make` in db/tx.py is namedtuple's, documented API despite its underscore.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_cursor
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine
from sqlalchemy.util.concurrency import await_


def bind_processors(compiled: SQLCompiler) -> dict[str, Callable[[Any], Any]]:
    """Parameter name -> the processor of its value, for the parameters that have one."""
    # (A tuple-typed parameter would have a sequence of processors; none of ours is one.)
    return dict(compiled._bind_processors)  # type: ignore[arg-type]


def result_columns(compiled: SQLCompiler) -> list[tuple[str, TypeEngine[Any]]]:
    """The (key, type) of each column of the statement's result, in order."""
    return [(c.keyname, c.type) for c in compiled._result_columns or []]


def result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """What turns the driver's value of a `type_` column into SQLAlchemy's (None: as it is)."""
    return type_._cached_result_processor(dialect, None)


def asyncpg_in_transaction(connection: Connection) -> Any:
    """asyncpg's connection under `connection` (run_sync's), its SQLAlchemy transaction begun.

    Call it inside `AsyncConnection.run_sync`: BEGIN is awaited from the greenlet it made.
    """
    adapted: Any = connection.connection.dbapi_connection  # SQLAlchemy's asyncpg adapter
    if adapted._transaction is None:
        await_(adapted._start_transaction())
    return adapted._connection


def driver_connection(adapted: AsyncAdapt_dbapi_connection) -> Any:
    """The driver's connection (aiosqlite's, asyncpg's) under SQLAlchemy's adapter."""
    return adapted._connection


def raise_translated(adapted: AsyncAdapt_dbapi_connection, error: Exception) -> NoReturn:
    """Raise `error` as SQLAlchemy's adapter does: as the DBAPI exception it expects."""
    adapted._handle_exception(error)
    raise error  # not reached: _handle_exception always raises


def use_cursor_class(
    connection_class: type[AsyncAdapt_dbapi_connection], cursor_class: type[Any]
) -> None:
    """Make `connection_class().cursor()` (not server-side) a `cursor_class`."""
    connection_class._cursor_cls = cursor_class


class PrefetchedCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor without a driver cursor behind it: a subclass runs each
    statement itself and hands its rows over whole (`set_rows`), which SQLAlchemy's fetch
    methods then read. Nothing stays open between statements."""

    __slots__ = ()

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # The base class's `_cursor` and soft-close memo stay unset: every method that read
        # them is overridden here or in the subclass.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = deque()

    @property
    def adapted_connection(self) -> AsyncAdapt_dbapi_connection:
        return self._adapt_connection

    @property
    def driver_connection(self) -> Any:
        return self._connection

    def set_rows(self, rows: Iterable[Any]) -> None:
        """The rows the next fetches return."""
        self._rows = deque(rows)

    async def _async_soft_close(self) -> None:
        pass  # nothing stays open between statements

    def close(self) -> None:
        self._rows.clear()
