"""aiosqlite's private names (aiosqlite 0.22.1, pinned in requirements.txt).

- `Connection._conn`: the sqlite3 connection, to be used only in the connection's own thread.
- `Connection._execute(fn, *args)`: run `fn(*args)` in that thread, awaiting its result (what
  SQLAlchemy's own aiosqlite adapter uses for `isolation_level`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")


def sqlite_connection(connection: aiosqlite.Connection) -> sqlite3.Connection:
    """The sqlite3 connection under `connection`: use it only in `run_in_thread`'s functions."""
    return connection._conn


def run_in_thread(
    connection: aiosqlite.Connection, function: Callable[..., T], *args: Any
) -> Awaitable[T]:
    """`function(*args)` in `connection`'s thread, after whatever is queued there already."""
    result: Awaitable[T] = connection._execute(function, *args)  # type: ignore[no-untyped-call]
    return result
