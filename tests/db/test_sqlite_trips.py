"""SQLite through quartchat/db/sqlite.py: few trips to the database thread, same transactions.

A trip is one function queued on aiosqlite's connection thread (`aiosqlite.Connection._execute`),
counted here by wrapping it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy.exc
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL

from quartchat.auth import users
from quartchat.conversations import store, turns
from quartchat.db import POOL_SIZE, Database
from quartchat.db.tables import users as user_rows
from quartchat.db.tx import run_in

from ..conftest import sqlite_copy


@pytest.fixture
def sqlite(tmp_path: Path, sqlite_template: Path) -> URL:
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return made


async def write_users(db: Database, *emails: str) -> None:
    async with db.write() as connection:
        for email in emails:
            await users.create(connection, email, None)


async def warm(db: Database) -> None:
    """A first transaction: the pool's connection is opened (and its pragmas set) here."""
    async with db.read() as connection:
        await connection.scalar(select(func.count()).select_from(user_rows))


async def test_a_write_transaction_of_n_statements_is_n_plus_one_trips(
    sqlite: URL, trips: list[str]
) -> None:
    db = Database.open(sqlite)
    try:
        await warm(db)
        trips.clear()
        async with db.write() as connection:
            await users.create(connection, "a@example.com", None)
            await users.create(connection, "b@example.com", None)
            await connection.scalar(select(func.count()).select_from(user_rows))
        # Each statement one trip (BEGIN IMMEDIATE riding with the first), then COMMIT; no
        # ROLLBACK when the pool takes the connection back after it.
        assert trips == ["_run", "_run", "_run", "commit"]
    finally:
        await db.close()


async def test_a_transaction_that_runs_nothing_makes_no_trip(sqlite: URL, trips: list[str]) -> None:
    db = Database.open(sqlite)
    try:
        await warm(db)
        trips.clear()
        async with db.write():
            pass
        async with db.read():
            pass
        assert trips == []
    finally:
        await db.close()


async def test_a_write_transaction_holds_the_write_lock_from_its_first_statement(
    sqlite: URL,
) -> None:
    db = Database.open(sqlite)
    other = sqlite3.connect(str(sqlite.database), timeout=0, isolation_level=None)
    try:
        async with db.write() as connection:
            await connection.scalar(select(func.count()).select_from(user_rows))  # a read first
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        async with db.read() as connection:
            await connection.scalar(select(func.count()).select_from(user_rows))
            other.execute("BEGIN IMMEDIATE")  # a read transaction leaves the lock free
            other.execute("ROLLBACK")
    finally:
        other.close()
        await db.close()


async def test_a_failed_statement_rolls_back_what_the_transaction_wrote_before_it(
    sqlite: URL,
) -> None:
    db = Database.open(sqlite, pool_size=1, max_overflow=0)  # the next transaction reuses it
    try:
        with pytest.raises(sqlalchemy.exc.IntegrityError):  # the second, by its unique email
            await write_users(db, "kept-out@example.com", "twice@example.com", "twice@example.com")
        async with db.write() as connection:
            await users.create(connection, "next@example.com", None)
        async with db.read() as connection:
            emails = (await connection.execute(select(user_rows.c.email))).scalars().all()
        assert emails == ["next@example.com"]
    finally:
        await db.close()


async def test_sending_a_message_is_one_transaction_of_the_writer(
    sqlite: URL, trips: list[str]
) -> None:
    """The conversation, its tree, the question, the reply's placeholder, the conversation
    moved to the top and COMMIT, in one function in the writer's thread (db/writer.py), with no
    trip to the pool's connections: what a turn costs before the upstream is asked."""
    db = Database.open(sqlite)
    try:
        async with db.write() as connection:
            owner_id = (await users.create(connection, "me@example.com", None)).id
            made = await store.create(connection, owner_id, title=turns.DEFAULT_TITLE, settings={})
        trips.clear()
        before = db.writer.transactions
        turn = await turns.send(
            db, owner_id, made.id, content="hello there", client_id="c-1", parent_id=None
        )
        assert (trips, db.writer.transactions) == ([], before + 1)
        assert [m.content for m in turn.chat.messages] == ["hello there"]
        async with db.read() as connection:
            after = await run_in(connection, store.get, owner_id, made.id)
        assert after is not None
        assert (after.leaf_id, after.title) == (turn.reply.id, "hello there")
    finally:
        await db.close()


async def test_a_transaction_whose_first_statement_fails_gives_the_write_lock_back(
    sqlite: URL,
) -> None:
    db = Database.open(sqlite, pool_size=1, max_overflow=0)
    other = sqlite3.connect(str(sqlite.database), timeout=0, isolation_level=None)
    try:
        await write_users(db, "taken@example.com")
        # BEGIN IMMEDIATE succeeds and the statement with it fails: the transaction is open.
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            await write_users(db, "taken@example.com")
        other.execute("BEGIN IMMEDIATE")  # the lock was given back, though the pool kept it
        other.execute("ROLLBACK")
    finally:
        other.close()
        await db.close()


async def test_a_crowd_of_transactions_reuses_the_pool_s_connections(sqlite: URL) -> None:
    """Opening a connection is a new thread, the file and its pragmas: under load the pool
    keeps the ones it has rather than closing all but a few as they come back."""
    db = Database.open(sqlite)
    opened = []
    event.listen(db.engine.sync_engine, "connect", lambda *_: opened.append(1))

    async def one(i: int) -> None:
        async with db.write() as connection:
            await users.create(connection, f"u{i}@example.com", None)

    try:
        await asyncio.gather(*(one(i) for i in range(40)))
        first = len(opened)
        await asyncio.gather(*(one(i) for i in range(40, 80)))
        assert 1 <= first <= POOL_SIZE
        assert len(opened) == first  # the second crowd opened none
    finally:
        await db.close()
