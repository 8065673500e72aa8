"""Counting per key (failures per IP or account, bytes imported per user) in fixed windows, shared
by every worker process and every host.

The views count through a `Counter`: `DatabaseCounter` (the functions below: one upsert per count
that starts a new window or adds to it, atomically on both databases, returning the new total; no
read-then-write), or `RedisCounter` when REDIS_URL is set (INCRBY and PEXPIRE in one script; no
write transaction on the database for each login attempt).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import case, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db import Database
from ..db.tables import now, rate_limits
from ..outages import Outage

log = logging.getLogger("quartchat.limits")


class Counter(Protocol):
    """Fixed-window counts per key, shared by every process."""

    async def attempt(
        self, keys: Sequence[str], limit: int, window: timedelta, amount: int = 1
    ) -> int | None:
        """Count `amount` under each key in order, stopping at the first key over `limit`: None
        if admitted under all of them, else the seconds until that key's window ends. What was
        counted stays counted (a refused login attempt is an attempt)."""
        ...

    async def forgive(
        self, refunded: Sequence[str] = (), cleared: Sequence[str] = (), amount: int = 1
    ) -> None:
        """Take back `amount` from each key of `refunded` (never below zero), and forget the
        counts of `cleared`."""
        ...


class DatabaseCounter:
    """`Counter` in the database's `rate_limits` table: one write transaction per call."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def attempt(
        self, keys: Sequence[str], limit: int, window: timedelta, amount: int = 1
    ) -> int | None:
        async with self.db.write() as connection:
            for key in keys:
                wait = await attempt(connection, key, limit, window, amount)
                if wait is not None:
                    return wait
        return None

    async def forgive(
        self, refunded: Sequence[str] = (), cleared: Sequence[str] = (), amount: int = 1
    ) -> None:
        async with self.db.write() as connection:
            for key in refunded:
                await refund(connection, key, amount)
            for key in cleared:
                await clear(connection, key)


REDIS_WAIT_SECONDS = 2.0
"""The longest a count waits on Redis before it is made in the database instead."""
RECHECK_SECONDS = 5.0
"""After Redis failed, how long counts go to the database before Redis is asked again."""

# Each key in order: add, start the window if the key is new (it has no expiry yet), and stop at
# the first key over the limit with the milliseconds its window has left; -1: admitted.
_ATTEMPT = """
for i = 1, #KEYS do
  local count = redis.call('INCRBY', KEYS[i], ARGV[3])
  local left = redis.call('PTTL', KEYS[i])
  if left < 0 then
    left = tonumber(ARGV[2])
    redis.call('PEXPIRE', KEYS[i], left)
  end
  if count > tonumber(ARGV[1]) then
    return left
  end
end
return -1
"""

# KEYS[1..ARGV[1]] lose ARGV[2] (never below zero, keeping their window); the rest are forgotten.
_FORGIVE = """
local refunded = tonumber(ARGV[1])
for i = 1, refunded do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count > 0 then
    redis.call('DECRBY', KEYS[i], math.min(count, tonumber(ARGV[2])))
  end
end
for i = refunded + 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 0
"""


class RedisCounter:
    """`Counter` in Redis: one script per call, keys `quartchat:limit:{key}` expiring with their
    window. While Redis is unreachable the counts go to `fallback` (the database: throttles are a
    defence, so they never fail open), with a warning at most once a minute.

    (One script over several keys: a single Redis server or a primary with replicas, not a
    Redis Cluster, whose keys could live on different nodes.)"""

    def __init__(
        self,
        redis: Redis,
        fallback: Counter,
        *,
        recheck: float = RECHECK_SECONDS,
        prefix: str = "quartchat:limit:",
    ) -> None:
        self._redis = redis
        self._fallback = fallback
        self._recheck = recheck
        self._prefix = prefix
        self._attempt = redis.register_script(_ATTEMPT)
        self._forgive = redis.register_script(_FORGIVE)
        self._redis_down_until = -math.inf
        self._outage = Outage(
            log, "Redis unreachable (%s): rate limits are counted in the database meanwhile"
        )

    async def attempt(
        self, keys: Sequence[str], limit: int, window: timedelta, amount: int = 1
    ) -> int | None:
        if self._usable():
            names = [self._prefix + key for key in keys]
            window_ms = max(1, int(window.total_seconds() * 1000))
            try:
                async with asyncio.timeout(REDIS_WAIT_SECONDS):
                    left = int(await self._attempt(keys=names, args=[limit, window_ms, amount]))
            except (RedisError, TimeoutError) as exc:
                self._unreachable(exc)
            else:
                return None if left < 0 else left // 1000 + 1
        return await self._fallback.attempt(keys, limit, window, amount)

    async def forgive(
        self, refunded: Sequence[str] = (), cleared: Sequence[str] = (), amount: int = 1
    ) -> None:
        if self._usable():
            names = [self._prefix + key for key in (*refunded, *cleared)]
            try:
                async with asyncio.timeout(REDIS_WAIT_SECONDS):
                    await self._forgive(keys=names, args=[len(refunded), amount])
            except (RedisError, TimeoutError) as exc:
                self._unreachable(exc)
            else:
                return
        await self._fallback.forgive(refunded, cleared, amount)

    def _usable(self) -> bool:
        return time.monotonic() >= self._redis_down_until

    def _unreachable(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + self._recheck
        self._outage.noticed(exc)


def counter(db: Database, redis: Redis | None) -> Counter:
    """The counter of an app: in Redis when there is one, else in the database."""
    fallback = DatabaseCounter(db)
    return RedisCounter(redis, fallback) if redis is not None else fallback


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


async def refund(connection: AsyncConnection, key: str, amount: int = 1) -> None:
    """Take back `amount` counted for `key` (an attempt that succeeded), never below zero."""
    await connection.execute(
        update(rate_limits)
        .where(rate_limits.c.key == key, rate_limits.c.count > 0)
        .values(
            count=case(
                (rate_limits.c.count > amount, rate_limits.c.count - amount),
                else_=0,
            )
        )
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
