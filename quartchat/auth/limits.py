"""Counting per key (failures per IP or account, bytes imported per user) in fixed windows, in the
database, so that every worker process and every host counts together.

One statement per count: an upsert that starts a new window or adds to it, atomically on both
databases, returning the new total; no read-then-write.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import now, rate_limits


async def attempt(
    connection: AsyncConnection, key: str, limit: int, window: timedelta, amount: int = 1
) -> int | None:
    """Count `amount` (one attempt, or the bytes of an import) for `key` before doing the costly
    thing: None if it is admitted (at most `limit` in the window), else the seconds until the
    window ends.

    Counting first, in one statement, is what makes the limit hold under concurrency: N requests
    at once get N distinct counts, so only `limit` of them are admitted (a read of the count
    followed, after the work, by a write let all N through)."""
    count, window_start = await _add(connection, key, window, amount)
    if count <= limit:
        return None
    remaining = (window_start + window - now()).total_seconds()
    return max(1, int(remaining) + 1)


async def refund(connection: AsyncConnection, key: str) -> None:
    """Take back one attempt counted for `key` (it succeeded), never below zero."""
    await connection.execute(
        update(rate_limits)
        .where(rate_limits.c.key == key, rate_limits.c.count > 0)
        .values(count=rate_limits.c.count - 1)
    )


async def _add(
    connection: AsyncConnection, key: str, window: timedelta, amount: int
) -> tuple[int, datetime]:
    at = now()
    expired = rate_limits.c.window_start <= at - window
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(rate_limits).values(key=key, window_start=at, count=amount)
    statement = statement.on_conflict_do_update(
        index_elements=[rate_limits.c.key],
        set_={
            "count": case((expired, amount), else_=rate_limits.c.count + amount),
            "window_start": case((expired, at), else_=rate_limits.c.window_start),
        },
    ).returning(rate_limits.c.count, rate_limits.c.window_start)
    count, window_start = (await connection.execute(statement)).one()
    if random.random() < 0.01:  # now and then, forget windows long over
        await connection.execute(
            delete(rate_limits).where(rate_limits.c.window_start < at - window * 60)
        )
    return int(count), window_start


async def clear(connection: AsyncConnection, key: str) -> None:
    """Forget `key`'s count (a success that vouches for the key, e.g. a right password)."""
    await connection.execute(delete(rate_limits).where(rate_limits.c.key == key))
