"""`Database.run(work)`: a write transaction as one function (quartchat/db/tx.py), on both
databases -- statements compiled once, run by sqlite3 in the writer's thread or by asyncpg."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Select, create_engine, func, insert, literal_column, select, text
from sqlalchemy.engine import URL

from quartchat.auth import users
from quartchat.conversations import rows, store
from quartchat.db import Database
from quartchat.db import tx as tx_module
from quartchat.db.tables import conversations
from quartchat.db.tx import SQLiteTx, Tx, run_in


@pytest.fixture
async def db(database: URL) -> AsyncIterator[Database]:
    made = Database.open(database)
    yield made
    await made.close()


async def a_user(db: Database) -> int:
    async with db.write() as connection:
        return (await users.create(connection, "me@example.com", None)).id


async def test_the_work_s_writes_are_committed_and_its_result_returned(db: Database) -> None:
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={"model": "m"})

    def work(tx: Tx) -> str:
        reply = store.add(tx, owner_id, made.id, role="user", content="hi", parent_id=None)
        assert reply is not None
        tx.run(store._TOUCH, touch_values(owner_id, made.id, reply.id))
        return reply.id

    reply_id = await db.run(work)
    async with db.read() as connection:
        after = await run_in(connection, store.get, owner_id, made.id)
        tree = await run_in(connection, store.messages_of, owner_id, made.id)
    assert after is not None and after.leaf_id == reply_id
    assert [m.id for m in tree] == [reply_id]


def touch_values(owner_id: int, conversation_id: str, leaf_id: str) -> dict[str, object]:
    return {
        "owner": owner_id,
        "key": conversation_id,
        "new_leaf_id": leaf_id,
        "new_title": None,
        "at": datetime.now(UTC),
    }


async def test_rows_read_in_the_work_are_typed_as_the_engine_reads_them(db: Database) -> None:
    """Times with their zone, JSON as objects, booleans: SQLAlchemy's own type processors."""
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(
            connection, owner_id, title="t", settings={"model": "m", "temperature": 0.5}
        )
        await run_in(
            connection, store.add, owner_id, made.id, role="assistant", content="x", parent_id=None,
            usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            error={"code": "E", "message": "m"},
        )  # fmt: skip
        by_engine = (
            await run_in(connection, store.get, owner_id, made.id),
            await run_in(connection, store.messages_of, owner_id, made.id),
        )

    def read(tx: Tx) -> tuple[rows.Conversation | None, list[rows.Message]]:
        return store.get(tx, owner_id, made.id), store.messages_of(tx, owner_id, made.id)

    in_work = await db.run(read)
    assert in_work == by_engine
    conversation, (message,) = in_work
    assert conversation is not None and conversation.pinned is False
    assert conversation.created_at.tzinfo is not None
    assert message.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert message.error == {"code": "E", "message": "m"}


async def test_a_row_written_in_the_work_is_stored_as_the_engine_stores_it(
    db: Database,
) -> None:
    """The same message through the engine and through `run`: the same column values in the
    database (JSON's None is the text 'null' for both, times in one format)."""
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={})
        await run_in(
            connection, store.add, owner_id, made.id, role="user", content="a", parent_id=None
        )
    await db.run(
        partial(store.add, owner_id=owner_id, conversation_id=made.id, role="user",
                content="b", parent_id=None)
    )  # fmt: skip
    async with db.read() as connection:
        stored = (
            await connection.execute(
                text(
                    "SELECT content, error IS NULL, CAST(error AS TEXT),"
                    " CAST(created_at AS TEXT) LIKE '____-__-__ __:__:__%', status, model IS NULL"
                    " FROM messages ORDER BY content"
                )
            )
        ).all()
    by_engine, by_run = (tuple(row[1:]) for row in stored)
    assert [row[0] for row in stored] == ["a", "b"]
    assert by_run == by_engine


async def test_messages_written_in_the_work_are_the_messages_read_back(db: Database) -> None:
    """`store.insert_in` makes its messages from the rows it writes, not from the database's
    answer: they must be what a read finds (times with their zone, usage, the error)."""
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={})
    question = rows.new_message(made.id, role="user", content="q", parent_id=None, client_id="c")
    reply = rows.new_message(
        made.id, role="assistant", content="r", parent_id=question["id"], status="error",
        model="m", finish_reason="stop", error={"code": "E", "message": "m"},
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    )  # fmt: skip
    written = await db.run(partial(store.insert_in, rows=[question, reply]))
    async with db.read() as connection:
        read = await run_in(connection, store.messages_of, owner_id, made.id)
    assert written == read
    assert [m.content for m in written] == ["q", "r"]
    assert written[1].created_at.tzinfo is not None and written[1].usage is not None


async def test_work_that_raises_leaves_nothing_written_and_the_lock_free(db: Database) -> None:
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={})

    def work(tx: Tx) -> None:
        store.add(tx, owner_id, made.id, role="user", content="lost", parent_id=None)
        raise LookupError("changed my mind")

    with pytest.raises(LookupError):
        await db.run(work)
    async with db.write() as connection:  # a writer gets the lock at once
        assert await run_in(connection, store.messages_of, owner_id, made.id) == []


async def test_a_cancelled_caller_waits_for_the_transaction_and_it_is_kept(db: Database) -> None:
    """Quart cancels a request's task when its client hangs up: the transaction under way ends
    as it would have (here, committed), then the cancellation arrives."""
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={})
    started, release = threading.Event(), threading.Event()

    def work(tx: Tx) -> None:
        store.add(tx, owner_id, made.id, role="user", content="first", parent_id=None)
        started.set()
        if db.sqlite:  # in the database's thread: hold the work here until the caller is gone
            release.wait(10)
        else:  # on the loop's thread: hold it in the server, a statement the cancellation meets
            tx.rows(select(func.pg_sleep(0.3)), {})
        store.add(tx, owner_id, made.id, role="user", content="second", parent_id=None)

    task = asyncio.ensure_future(db.run(work))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the work
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.read() as connection:
        tree = await run_in(connection, store.messages_of, owner_id, made.id)
    assert sorted(m.content for m in tree) == ["first", "second"]
    async with db.write() as connection:  # and the lock is free
        await store.create(connection, owner_id, title="next", settings={})


async def test_a_statement_with_python_side_defaults_is_refused(db: Database) -> None:
    """`pinned`, `archived` and `revision` have defaults SQLAlchemy fills in while executing,
    which `run` does not run: such a statement is refused, not run with NULLs."""
    owner_id = await a_user(db)
    statement = insert(conversations)
    values = {
        "id": rows.new_id(),
        "owner_id": owner_id,
        "title": "t",
        "settings": {},
        "created_at": datetime.now(UTC),
        "updated_at": datetime.now(UTC),
    }
    with pytest.raises(ValueError, match="execution-time defaults"):
        await db.run(lambda tx: tx.run(statement, values))
    async with db.read() as connection:
        assert (await connection.execute(select(conversations.c.id))).all() == []


async def test_the_work_holds_the_write_lock_from_its_start(db: Database, database: URL) -> None:
    """BEGIN IMMEDIATE: a work that reads, then writes, cannot lose an update made by another
    process in between, because no other writer gets in before it ends."""
    if not db.sqlite:
        pytest.skip("SQLite's write lock")
    seen: list[str] = []

    def work(tx: Tx) -> None:
        other = sqlite3.connect(str(database.database), timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            seen.append("the lock was free")
        except sqlite3.OperationalError as error:
            seen.append(str(error))
        finally:
            other.close()

    await db.run(work)
    assert seen == ["database is locked"]


async def test_a_busy_database_is_waited_for_not_failed(db: Database, database: URL) -> None:
    """Another process holds the write lock for a moment: the work waits (busy timeout)."""
    if not db.sqlite:
        pytest.skip("SQLite's write lock")
    owner_id = await a_user(db)
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="t", settings={})
    other = sqlite3.connect(str(database.database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        task = asyncio.ensure_future(
            db.run(partial(store.add, owner_id=owner_id, conversation_id=made.id,
                           role="user", content="waited", parent_id=None))
        )  # fmt: skip
        await asyncio.sleep(0.3)
        assert not task.done()
        other.execute("COMMIT")
        added = await task
        assert added is not None and added.content == "waited"
    finally:
        other.close()


def test_statements_built_per_call_do_not_grow_the_compiled_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A statement made inside the work is a new key each call: the cache must stay bounded (it
    # grew by one entry a call, for ever), while a module-level statement in use stays compiled.
    # A small bound, so that a hundred times as many calls as it (each compiling its statement:
    # ~150 us) prove it in a second or two.
    monkeypatch.setattr(tx_module, "COMPILED_CACHE_SIZE", 100, raising=False)
    dialect = create_engine("sqlite://").dialect
    connection = sqlite3.connect(":memory:")
    tx = SQLiteTx(connection, dialect)
    kept: Select[Any] = select(literal_column("1"))
    tx.rows(kept, {})
    compiled_once = tx_module._COMPILED[("sqlite", kept, ())]
    for n in range(10_000):
        tx.run(text("SELECT :n"), {"n": n})
        if n % 50 == 0:
            tx.rows(kept, {})  # in use all along
    connection.close()
    assert len(tx_module._COMPILED) <= 100
    assert tx_module._COMPILED[("sqlite", kept, ())] is compiled_once
