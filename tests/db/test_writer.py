"""The writers of `Database.run` (quartchat/db/writer.py), on both databases: works waiting
together share one transaction, and each is still all or nothing. (tests/db/test_tx.py runs
`Database.run` itself.)"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from quartchat.auth import users
from quartchat.conversations import rows, store, turns
from quartchat.db import SQLITE_PRAGMAS, Database, writer
from quartchat.db.tx import SQLiteTx, Tx, run_in
from quartchat.errors import APIError

from ..conftest import sqlite_copy


@pytest.fixture
def sqlite(tmp_path: Path, sqlite_template: Path) -> URL:
    return sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
async def db(database: URL) -> AsyncIterator[Database]:
    made = Database.open(database)
    yield made
    await made.close()


async def a_conversation(db: Database) -> tuple[int, str]:
    async with db.write() as connection:
        owner_id = (await users.create(connection, "me@example.com", None)).id
        made = await store.create(connection, owner_id, title="t", settings={})
    return owner_id, made.id


async def contents(db: Database, owner_id: int, conversation_id: str) -> list[str]:
    async with db.read() as connection:
        tree = await run_in(connection, store.messages_of, owner_id, conversation_id)
    return sorted(m.content for m in tree)


class Blocker:
    """On SQLite, a work that keeps the writer's thread busy until released, so that the works
    queued behind it are waiting together when it ends. (On PostgreSQL, where batches run side by
    side, the works queued in one turn of the event loop are one batch already.)"""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, tx: Tx) -> None:
        self.started.set()
        if isinstance(tx, SQLiteTx):
            self.release.wait(10)

    async def hold(self, db: Database) -> asyncio.Task[None]:
        task = asyncio.ensure_future(db.run(self))
        assert await asyncio.to_thread(self.started.wait, 10)
        return task


def adding(owner_id: int, conversation_id: str, content: str) -> Callable[[Tx], rows.Message]:
    def work(tx: Tx) -> rows.Message:
        message = store.add(
            tx, owner_id, conversation_id, role="user", content=content, parent_id=None
        )
        assert message is not None  # the owner's conversation
        return message

    return work


async def queued(db: Database, works: list[Callable[[Tx], Any]]) -> list[asyncio.Task[Any]]:
    tasks = [asyncio.ensure_future(db.run(w)) for w in works]
    # One turn of the loop, not a wait for time: each task runs up to its first await, and
    # `run` hands its work to the writer before that.
    await asyncio.sleep(0)
    return tasks


async def test_works_waiting_together_are_one_transaction(db: Database) -> None:
    owner_id, conversation_id = await a_conversation(db)
    blocker = Blocker()
    held = await blocker.hold(db)
    before = db.writer.transactions
    tasks = await queued(db, [adding(owner_id, conversation_id, f"m{i}") for i in range(10)])
    blocker.release.set()
    await held
    results = await asyncio.gather(*tasks)
    assert sorted(r.content for r in results) == [f"m{i}" for i in range(10)]
    assert db.writer.transactions == before + 1
    assert await contents(db, owner_id, conversation_id) == [f"m{i}" for i in range(10)]


async def test_a_transaction_takes_at_most_a_batch_of_works(db: Database) -> None:
    owner_id, conversation_id = await a_conversation(db)
    blocker = Blocker()
    held = await blocker.hold(db)
    count = writer.BATCH + 1
    before = db.writer.transactions
    tasks = await queued(db, [adding(owner_id, conversation_id, f"m{i}") for i in range(count)])
    blocker.release.set()
    await held
    await asyncio.gather(*tasks)
    assert db.writer.transactions == before + 2
    assert len(await contents(db, owner_id, conversation_id)) == count


async def test_a_work_that_raises_among_others_is_rolled_back_alone(db: Database) -> None:
    owner_id, conversation_id = await a_conversation(db)

    def failing(tx: Tx) -> None:
        adding(owner_id, conversation_id, "lost")(tx)
        raise LookupError("changed my mind")

    blocker = Blocker()
    held = await blocker.hold(db)
    before = db.writer.transactions
    first, second, third = await queued(
        db,
        [adding(owner_id, conversation_id, "kept 1"), failing,
         adding(owner_id, conversation_id, "kept 2")],
    )  # fmt: skip
    blocker.release.set()
    await held
    assert (await first).content == "kept 1"
    with pytest.raises(LookupError, match="changed my mind"):
        await second
    assert (await third).content == "kept 2"
    # The three were one transaction. On PostgreSQL (no savepoints) it was rolled back, and
    # each work ran again alone.
    assert db.writer.transactions == before + (1 if db.sqlite else 1 + 3)
    assert await contents(db, owner_id, conversation_id) == ["kept 1", "kept 2"]


async def test_a_refused_turn_among_a_batch_leaves_the_others_one_transaction(
    db: Database,
) -> None:
    # A 404 is ordinary: it must not roll back (and, on PostgreSQL, rerun one by one) the other
    # users' works it was batched with. One conversation per send: a conversation runs one reply
    # at a time.
    owner_id, first = await a_conversation(db)
    async with db.write() as connection:
        ids = [first] + [
            (await store.create(connection, owner_id, title="t", settings={})).id
            for _ in range(writer.BATCH - 1)
        ]
    blocker = Blocker()
    held = await blocker.hold(db)
    before = db.writer.transactions
    sends = [
        turns.send(
            db,
            owner_id,
            "no-such-conversation" if i == 30 else ids[i],
            content=f"m{i}",
            client_id=f"c{i}",
            parent_id=None,
        )
        for i in range(writer.BATCH)
    ]
    tasks = [asyncio.ensure_future(send) for send in sends]
    await asyncio.sleep(0)  # as in `queued`: every work is with the writer
    blocker.release.set()
    await held
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    refused = outcomes.pop(30)
    assert isinstance(refused, APIError) and refused.status_code == 404
    assert all(isinstance(turn, turns.Turn) for turn in outcomes)
    assert db.writer.transactions == before + 1
    for i, conversation_id in enumerate(ids):
        written = [] if i == 30 else ["", f"m{i}"]
        assert await contents(db, owner_id, conversation_id) == written


async def test_when_the_lock_cannot_be_had_every_work_fails_and_the_writer_goes_on(
    sqlite: URL,
) -> None:
    """BEGIN IMMEDIATE gives up after the busy timeout (another process kept the write lock):
    each work waiting hears it, nothing is half-written, and the next work runs."""
    pragmas = [p for p in SQLITE_PRAGMAS if "busy_timeout" not in p] + ["PRAGMA busy_timeout=50"]
    db = Database.open(sqlite)
    db.writer = writer.SQLiteWriter(str(sqlite.database), db.engine.dialect, pragmas)
    other = sqlite3.connect(str(sqlite.database), isolation_level=None)
    try:
        owner_id, conversation_id = await a_conversation(db)
        other.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.gather(
            *(db.run(adding(owner_id, conversation_id, f"m{i}")) for i in range(3)),
            return_exceptions=True,
        )
        assert [str(o) for o in outcomes] == ["database is locked"] * 3
        other.execute("ROLLBACK")
        assert (await db.run(adding(owner_id, conversation_id, "next"))).content == "next"
        assert await contents(db, owner_id, conversation_id) == ["next"]
    finally:
        other.close()
        await db.close()


async def test_a_closed_sqlite_writer_starts_again_when_it_is_given_work(sqlite: URL) -> None:
    """(SQLite's writer is a thread that `close()` stops; PostgreSQL's has none to restart.)"""
    db = Database.open(sqlite)
    try:
        owner_id, conversation_id = await a_conversation(db)
        await db.run(adding(owner_id, conversation_id, "before"))
        await db.writer.close()
        assert (await db.run(adding(owner_id, conversation_id, "after"))).content == "after"
        assert await contents(db, owner_id, conversation_id) == ["after", "before"]
    finally:
        await db.close()


async def test_a_file_that_cannot_be_opened_fails_the_work_rather_than_hanging(
    tmp_path: Path, sqlite: URL
) -> None:
    db = Database.open(sqlite)
    missing = tmp_path / "no such directory" / "quartchat.db"
    db.writer = writer.SQLiteWriter(str(missing), db.engine.dialect, SQLITE_PRAGMAS)
    try:
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            await asyncio.wait_for(db.run(lambda tx: None), 10)
    finally:
        await db.close()


async def test_works_one_after_another_each_get_run(db: Database) -> None:
    """More works, one at a time, than batches may run at once: each finds a writer to run it
    (one that ended is not counted as still under way)."""
    owner_id, conversation_id = await a_conversation(db)
    for i in range(writer.PARALLEL * 3):
        task = asyncio.ensure_future(db.run(adding(owner_id, conversation_id, f"m{i:02}")))
        done, _ = await asyncio.wait({task}, timeout=10)  # (wait_for's cancel would be waited out)
        if not done and isinstance(db.writer, writer.PostgresWriter):
            for _, future in db.writer._waiting:  # let the test end: nobody will run it
                future.cancel()
        assert done, f"work {i} was never run"
    assert await contents(db, owner_id, conversation_id) == [
        f"m{i:02}" for i in range(writer.PARALLEL * 3)
    ]
