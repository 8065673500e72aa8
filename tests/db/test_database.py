"""The data layer on both databases: the schema, transactions, migrations."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.engine import URL

from quartchat.db import Database
from quartchat.db.tables import now, users


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
