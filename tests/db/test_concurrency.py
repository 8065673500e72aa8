"""Four worker processes writing at once lose no update, on either database."""

from __future__ import annotations

import asyncio
import multiprocessing

from sqlalchemy import insert, select, update
from sqlalchemy.engine import URL, make_url

from quartchat.db import Database
from quartchat.db.tables import now, rate_limits

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
