"""The data layer on both databases: the schema, transactions, migrations."""

from __future__ import annotations

import asyncio
import contextlib

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import func, insert, select
from sqlalchemy.engine import URL

from quartchat.db import Database
from quartchat.db.tables import now, users
from quartchat.errors import error_kind


async def test_a_written_row_is_read_back_with_an_aware_utc_timestamp(database: URL) -> None:
    db = Database.open(database)
    try:
        at = now()
        async with db.write() as connection:
            await connection.execute(
                insert(users).values(
                    email="a@example.com",
                    role="user",
                    status="active",
                    created_at=at,
                    updated_at=at,
                )
            )
        async with db.read() as connection:
            row = (await connection.execute(select(users))).one()
            count = await connection.scalar(select(func.count()).select_from(users))
        assert row.email == "a@example.com"
        assert row.created_at == at
        assert row.created_at.tzinfo is not None
        assert count == 1
    finally:
        await db.close()


def test_an_unexpected_database_error_is_logged_with_its_driver_code_and_no_data() -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as connection:
        try:
            connection.exec_driver_sql("SELECT secret_column FROM 'a secret table'")
        except sqlalchemy.exc.OperationalError as error:
            kind = error_kind(error)
    assert kind == "OperationalError (SQLITE_ERROR)"
    assert error_kind(ValueError("secret")) == "ValueError"


async def test_a_bulk_job_waits_for_the_writes_that_are_waiting_or_open(database: URL) -> None:
    db = Database.open(database)
    order: list[str] = []
    try:
        await db.writers_first()  # no write: no wait
        async with db.write():
            job = asyncio.ensure_future(db.writers_first())
            job.add_done_callback(lambda _: order.append("bulk job's turn"))
            for _ in range(20):  # the job has every chance to run, and must not
                await asyncio.sleep(0)
            order.append("write committed")
        await asyncio.wait_for(job, 5)
        assert order == ["write committed", "bulk job's turn"]
    finally:
        await db.close()


async def test_a_failed_write_does_not_leave_bulk_jobs_waiting(database: URL) -> None:
    db = Database.open(database)
    try:
        with contextlib.suppress(RuntimeError):
            async with db.write():
                raise RuntimeError("refused")
        await asyncio.wait_for(db.writers_first(), 5)
    finally:
        await db.close()
