"""The rate-limit counters (auth/limits.py): the database's and Redis' behave the same; Redis',
while Redis is away, counts in the database instead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from quartchat.auth.limits import Counter, DatabaseCounter, RedisCounter
from quartchat.db import Database

from ..conftest import REDIS_PASSWORD, sqlite_copy
from ..redis_server import RedisServer

MINUTE = timedelta(minutes=1)
DEADLINE = 10.0


@pytest.fixture
async def db(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.open(sqlite_copy(sqlite_template, tmp_path))
    yield database
    await database.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["database", "redis"])
def counter(request: pytest.FixtureRequest, db: Database) -> Counter:
    if request.param == "database":
        return DatabaseCounter(db)
    redis: Redis = request.getfixturevalue("redis")
    return RedisCounter(redis, DatabaseCounter(db))


async def admitted(counter: Counter, key: str, limit: int, amount: int = 1) -> bool:
    return await counter.attempt((key,), limit, MINUTE, amount) is None


async def test_attempts_at_once_are_admitted_exactly_up_to_the_limit(counter: Counter) -> None:
    waits = await asyncio.gather(*(counter.attempt(("k",), 10, MINUTE) for _ in range(30)))

    assert waits.count(None) == 10
    assert all(wait is not None and 1 <= wait <= 61 for wait in waits if wait is not None)


async def test_counting_stops_at_the_first_key_over_its_limit(counter: Counter) -> None:
    for _ in range(2):
        assert await counter.attempt(("full", "later"), 2, MINUTE) is None

    assert await counter.attempt(("full", "later"), 2, MINUTE) is not None

    assert await admitted(counter, "later", 3)  # 2 counted before, the refused one was not
    assert not await admitted(counter, "later", 3)


async def test_forgiving_refunds_never_below_zero_and_clears(counter: Counter) -> None:
    assert await admitted(counter, "k", 2)
    assert await admitted(counter, "k", 2)
    await counter.forgive(refunded=("k",), amount=1000)  # back to zero, not below

    assert [await admitted(counter, "k", 2) for _ in range(3)] == [True, True, False]

    await counter.forgive(cleared=("k",))
    assert await admitted(counter, "k", 2)


async def test_a_refused_amount_given_back_leaves_room_for_a_smaller_one(counter: Counter) -> None:
    # The import quota: bytes are counted first; a refused import gives its bytes back.
    assert await admitted(counter, "bytes", 10_000, 6_000)
    assert not await admitted(counter, "bytes", 10_000, 6_000)
    await counter.forgive(refunded=("bytes",), amount=6_000)

    assert await admitted(counter, "bytes", 10_000, 3_000)


async def test_a_new_window_starts_when_the_old_one_ends(counter: Counter) -> None:
    window = timedelta(milliseconds=300)
    assert await counter.attempt(("k",), 1, window) is None
    assert await counter.attempt(("k",), 1, window) == 1  # less than a second left: 1

    deadline = time.monotonic() + DEADLINE
    while await counter.attempt(("k",), 1, window) is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_redis_away_counts_in_the_database_warns_once_then_redis_again(
    redis_server: RedisServer, redis: Redis, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    in_database = DatabaseCounter(db)
    counter = RedisCounter(redis, in_database, recheck=0)
    redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="quartchat.limits"):
        results = [await admitted(counter, "k", 2) for _ in range(3)]

    assert results == [True, True, False]  # throttles never fail open
    assert not await admitted(in_database, "k", 2)  # the counts are the database's
    assert len([r for r in caplog.records if r.name == "quartchat.limits"]) == 1
    assert REDIS_PASSWORD not in caplog.text

    redis_server.start()  # empty again: counting starts afresh there
    assert await admitted(counter, "k", 2)
    assert await redis.get("quartchat:limit:k") == b"1"
