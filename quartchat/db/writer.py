"""The writes of `Database.run(work)`, group-committed: on SQLite one thread with its own
connection, on PostgreSQL batches on the pool's connections (`PostgresWriter`, below).

SQLite has one writer at a time anyway; here a process's `run` transactions go to a thread of
their own with a connection of its own, instead of through SQLAlchemy's pool and aiosqlite's
queue (a pool checkout, a trip to a connection's thread and back through the event loop: ~0.2 ms
of CPU per transaction, more than the transaction's own statements).

The thread takes every work waiting when it wakes and runs them in one transaction: BEGIN
IMMEDIATE, each work inside a SAVEPOINT (a work that raises is rolled back to it, alone, and gets
its exception), one COMMIT, then one wake-up of the event loop for all their results. Each work
is still all or nothing, and its caller hears of it only once it is committed; but under load
-- 200 replies checkpointing or ending within a few milliseconds of each other -- their
transactions share one BEGIN, one COMMIT and one wake-up instead of one each. A lone write is
one transaction, as before. Batches are capped (`BATCH`) so that no one holds the write lock
long: other processes' writers wait for it.

Cancelling the task that awaits `run` does not withdraw its work: the caller waits for the
outcome, then the cancellation is delivered, as for every transaction here (db/__init__.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from .tx import AsyncpgTx, SQLiteTx, Tx

T = TypeVar("T")

BATCH = 64  # works per transaction at most
PARALLEL = 4  # PostgreSQL: batches under way at once

_Job = tuple[Callable[[Tx], Any], asyncio.Future[Any]]
_STOP = None


class SQLiteWriter:
    """A thread that runs write transactions on its own connection, in batches."""

    def __init__(self, path: str, dialect: Dialect, pragmas: Sequence[str]) -> None:
        self.path = path
        self.dialect = dialect
        self.pragmas = pragmas
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.transactions = 0  # committed or not; what the tests count
        self.timed: Callable[[float], None] | None = None  # told each transaction's seconds

    async def run(self, work: Callable[[Tx], T]) -> T:
        if self._thread is None:
            self._start()  # at the first work: in the process that serves, after any fork
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((work, future))
        return await _outcome(future)

    async def close(self) -> None:
        """Stop the thread once the works already queued are done (a later work starts a new
        one)."""
        thread, jobs = self._thread, self._jobs
        if thread is None:
            return
        self._thread = None
        jobs.put(_STOP)
        await asyncio.to_thread(thread.join)

    def _start(self) -> None:
        jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._jobs = jobs
        self._thread = threading.Thread(
            target=self._serve, args=(jobs,), name="quartchat-sqlite-writer", daemon=True
        )  # daemon: a process that exits without close() is not held up by it
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        # Autocommit as far as the driver goes: BEGIN and COMMIT are ours.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in self.pragmas:
            connection.execute(pragma)
        return connection

    def _serve(self, queued: queue.SimpleQueue[_Job | None]) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                job = queued.get()
                jobs: list[_Job] = []
                while job is not _STOP:
                    jobs.append(job)
                    if len(jobs) == BATCH:
                        break
                    try:
                        job = queued.get_nowait()
                    except queue.Empty:
                        break
                if jobs:
                    try:
                        connection = connection or self._connect()
                    except Exception as error:  # the file cannot be opened: say so, try again
                        self._deliver(jobs, [(False, error)] * len(jobs))
                    else:
                        started = time.perf_counter()
                        outcomes = self._transaction(connection, jobs)
                        if self.timed is not None:
                            self.timed(time.perf_counter() - started)
                        self._deliver(jobs, outcomes)
                if job is _STOP:
                    return
        finally:
            if connection is not None:
                connection.close()

    def _transaction(
        self, connection: sqlite3.Connection, jobs: list[_Job]
    ) -> list[tuple[bool, Any]]:
        """Run the jobs in one transaction: (True, result) or (False, exception) for each."""
        self.transactions += 1
        tx = SQLiteTx(connection, self.dialect)
        outcomes: list[tuple[bool, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for work, _ in jobs:
                connection.execute("SAVEPOINT work")
                try:
                    outcomes.append((True, work(tx)))
                except BaseException as error:
                    connection.execute("ROLLBACK TO work")
                    outcomes.append((False, error))
                connection.execute("RELEASE work")
            connection.execute("COMMIT")
        except BaseException as error:
            # BEGIN, a savepoint or COMMIT failed (a busy timeout, a full disk): nothing of the
            # transaction is kept, and every work hears why.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return [(False, error)] * len(jobs)
        return outcomes

    def _deliver(self, jobs: list[_Job], outcomes: list[tuple[bool, Any]]) -> None:
        """Hand each outcome to its caller: one wake-up per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, future), (ok, value) in zip(jobs, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, ok, value))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)


class PostgresWriter:
    """PostgreSQL's `run` transactions: the works waiting together share one transaction on a
    pooled connection (a checkout, BEGIN and COMMIT: of a turn's 12 round trips to the server,
    each a wake-up of the event loop with SQLAlchemy's work around it, 6 are BEGIN and COMMIT).
    At most `PARALLEL` such transactions at once, so a slow server does not hold every write up.

    No SAVEPOINT per work: on PostgreSQL each would be two more round trips. If a work raises
    (or COMMIT fails), the whole transaction is rolled back and each of its works runs again
    alone, so each still commits or fails by itself; works are functions of what is in the
    database (a retried send finds its client id, if the first try was committed after all).
    So a work refuses by returning a value (conversations/turns.py's `Refused`), never by
    raising: a 404 must not roll back and rerun up to `BATCH` other users' works.
    """

    def __init__(self, begin: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self.begin = begin
        self._waiting: list[_Job] = []
        self._drains: set[asyncio.Task[None]] = set()
        self.transactions = 0  # committed or not; what the tests count
        self.timed: Callable[[float], None] | None = None  # told each batch's seconds

    async def run(self, work: Callable[[Tx], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append((work, future))
        if len(self._drains) < PARALLEL:
            # Started now, it runs at the loop's next turn, with whatever is waiting by then.
            self._drains.add(loop.create_task(self._drain()))
        return await _outcome(future)

    async def close(self) -> None:
        """Once the works already waiting are done."""
        await asyncio.gather(*self._drains)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                jobs, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
                started = time.perf_counter()
                try:
                    outcomes = await self._transaction(jobs)
                except BaseException as error:  # cancelled (the loop is closing): say so
                    _settle([(future, False, error) for _, future in jobs])
                    raise
                if self.timed is not None:
                    self.timed(time.perf_counter() - started)
                _settle([(f, ok, v) for (_, f), (ok, v) in zip(jobs, outcomes, strict=True)])
        finally:
            # Here, not in a done-callback: a work queued after the last look at `_waiting`
            # must find this drain gone, and start one.
            self._drains.discard(asyncio.current_task())

    async def _transaction(self, jobs: list[_Job]) -> list[tuple[bool, Any]]:
        self.transactions += 1
        works = [work for work, _ in jobs]
        try:
            async with self.begin() as connection:
                results = await connection.run_sync(
                    lambda sync: [work(tx) for tx in [AsyncpgTx(sync)] for work in works]
                )
            return [(True, result) for result in results]
        except Exception as error:
            if len(jobs) == 1:
                return [(False, error)]
        return [(await self._transaction([job]))[0] for job in jobs]


async def _outcome(future: asyncio.Future[T]) -> T:
    """The work's result once it is done, even if the task waiting for it is cancelled meanwhile
    (the cancellation is delivered after)."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as error:
            if future.cancelled():  # the loop is closing
                raise
            cancelled = error  # ours: the work runs on, and its outcome is waited for
    if cancelled is not None:
        raise cancelled
    return future.result()


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
