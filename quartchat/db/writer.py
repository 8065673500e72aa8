"""SQLite's writes of `Database.run(work)`: one thread, one connection, group commit.

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
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect

from .tx import SQLiteTx, Tx

T = TypeVar("T")

BATCH = 64  # works per transaction at most

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

    async def run(self, work: Callable[[Tx], T]) -> T:
        if self._thread is None:
            self._start()  # at the first work: in the process that serves, after any fork
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((work, future))
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
                        self._deliver(jobs, self._transaction(connection, jobs))
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
        alone = len(jobs) == 1  # no savepoint needed: the transaction is the work's own
        outcomes: list[tuple[bool, Any]] = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for work, _ in jobs:
                if not alone:
                    connection.execute("SAVEPOINT work")
                try:
                    outcomes.append((True, work(tx)))
                except BaseException as error:
                    if alone:
                        raise
                    connection.execute("ROLLBACK TO work")
                    outcomes.append((False, error))
                if not alone:
                    connection.execute("RELEASE work")
            connection.execute("COMMIT")
        except BaseException as error:
            # BEGIN, a savepoint or COMMIT failed (a busy timeout, a full disk), or a lone
            # work raised: nothing of the transaction is kept, and every work hears why.
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


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
