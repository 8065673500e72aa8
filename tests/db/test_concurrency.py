"""Four worker processes writing at once lose no update, on either database."""

from __future__ import annotations

import asyncio
import multiprocessing
import random

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import URL, make_url

import quartchat.db as db_module
from quartchat.db import SQLITE_PRAGMAS, Database
from quartchat.db.tables import now, rate_limits
from quartchat.errors import error_kind

WORKERS = 4
INCREMENTS = 40


async def _increment(url: URL, times: int) -> None:
    db = Database.open(url)
    try:
        for _ in range(times):
            # Read, then write what was read plus one: the pattern that loses updates when two
            # processes read the same value before either writes.
            async with db.write() as connection:
                query = select(rate_limits.c.count).where(rate_limits.c.key == "counter")
                value = (await connection.execute(query.with_for_update())).scalar_one()
                await connection.execute(
                    update(rate_limits)
                    .where(rate_limits.c.key == "counter")
                    .values(count=value + 1)
                )
    finally:
        await db.close()


def _worker(url: str, times: int) -> None:
    asyncio.run(_increment(make_url(url), times))


async def test_four_processes_incrementing_one_row_lose_no_update(database: URL) -> None:
    db = Database.open(database)
    async with db.write() as connection:
        await connection.execute(
            insert(rate_limits).values(key="counter", window_start=now(), count=0)
        )
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as forked workers are
    url = database.render_as_string(hide_password=False)
    workers = [context.Process(target=_worker, args=(url, INCREMENTS)) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * WORKERS
    async with db.read() as connection:
        total = await connection.scalar(
            select(rate_limits.c.count).where(rate_limits.c.key == "counter")
        )
    await db.close()
    assert total == WORKERS * INCREMENTS


async def test_writers_cancelled_at_any_moment_leave_no_lock_behind(
    database: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quart cancels a request's task when its client hangs up. A cancellation landing while a
    connection opens, BEGIN waits for the lock, a statement runs or COMMIT does, once left an
    SQLite connection holding the write lock: the other writers failed ("database is locked")."""
    # A shorter busy timeout: a lock left behind fails the next writers in 3 s, not 10. (1 s
    # was too short for 30 writers taking turns on a loaded CI machine: SQLITE_BUSY, no leak.)
    pragmas = tuple(p.replace("busy_timeout=10000", "busy_timeout=3000") for p in SQLITE_PRAGMAS)
    monkeypatch.setattr(db_module, "SQLITE_PRAGMAS", pragmas)
    db = Database.open(database)
    async with db.write() as connection:
        await connection.execute(delete(rate_limits))
    rng = random.Random(7)
    failures: list[str] = []

    async def writer(n: int) -> None:
        try:
            async with db.read() as connection:
                await connection.execute(select(func.count()).select_from(rate_limits))
            async with db.write() as connection:
                await connection.execute(
                    insert(rate_limits).values(key=f"k{n}", window_start=now(), count=n)
                )
                await connection.execute(select(func.count()).select_from(rate_limits))
        except Exception as error:
            failures.append(error_kind(error))

    for burst in range(40):
        tasks = [asyncio.create_task(writer(burst * 100 + n)) for n in range(30)]
        await asyncio.sleep(rng.random() * 0.05)
        for task in rng.sample(tasks, 10):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert failures == []
    async with db.write() as connection:  # and the lock is free now
        await connection.execute(
            insert(rate_limits).values(key="last", window_start=now(), count=0)
        )
    async with db.read() as connection:
        written = await connection.scalar(select(func.count()).select_from(rate_limits))
    await db.close()
    assert written is not None and 1 <= written <= 40 * 30 + 1
