"""The data layer on both databases: the schema, transactions, migrations."""

from __future__ import annotations

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
