"""The usage ledger: one small row per metered request, written in batches, rolled up per day.

A `Ledger` is a sink of the meters (usage/meter.py): `record()` appends a tuple to a buffer in
memory and returns -- no I/O, nothing that waits, on the request path. A task of its own flushes
the buffer every USAGE_FLUSH_SECONDS, or sooner once `FLUSH_ROWS` are waiting, as ONE
transaction through the app's batched writer (`Database.run`): the new names interned in
`usage_names`, the raw rows into `usage_events`, and the day's roll-ups (user x model x day)
added to `usage_daily`. Rows and roll-ups are committed together or not at all, so the roll-ups
always add up to the rows they were made from.

Rows carry labels and numbers only (time, user, token, route, upstream, model, outcome, tokens,
latencies): never a prompt or a reply.

A flush that fails (the database is away) keeps its rows for the next; while it stays away the
buffer is bounded (`BUFFER_MAX`), and past that the oldest rows go, with one line in the log.
`close()` flushes what is left: the app calls it as it stops, after the last replies ended and
before the database closes, so a SIGTERM loses nothing.

Raw rows older than USAGE_RETENTION_DAYS are deleted by the app's housekeeping (`prune`), in
bounded chunks; the roll-ups are kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import date, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import Integer, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from ..db import Database
from ..db.tables import usage_daily, usage_events, usage_names
from ..db.tx import Tx
from .meter import Record, Request

log = logging.getLogger("quartchat")

FLUSH_ROWS = 1000
"""A flush starts before its time once this many rows are waiting."""
FLUSH_MAX = 1000
"""Rows written per transaction at most: on SQLite the write lock is held ~40 ms for that many
(bench/ledger_bench.py), and other writers wait for it."""
BUFFER_MAX = 200_000
"""Rows kept in memory while the database is away (~30 MB); past this the oldest are dropped."""
PRUNE_CHUNK = 10_000
"""Raw rows deleted per transaction by the retention."""
PRUNE_CHUNKS = 50
"""Chunks per housekeeping round at most: a long backlog is cleared over several rounds."""
NAME_MAX = 200  # usage_names.name's length
SMALLINT_MAX = 32767
NOT_ERRORS = frozenset({"ok", "disconnected"})
"""Outcomes that are not errors in the roll-ups: a reply that ended, one the client left."""

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000


class Row(NamedTuple):
    """One request as the buffer holds it until its flush (labels and numbers: no text)."""

    at: int  # Unix milliseconds, when it began
    user_id: int | None
    token_id: int | None
    route: str
    upstream: str
    model: str
    outcome: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: int | None
    duration_ms: int
    estimated: bool
    cost_micros: int | None


def _upsert(dialect: Any) -> ClauseElement:
    """Add a batch's roll-ups to the day's: counts add up, a cost stays null until a priced
    request comes (null + null is null: "no price", not "free")."""
    statement = dialect.insert(usage_daily)
    new, old = statement.excluded, usage_daily.c
    summed = ("requests", "errors", "estimated", "prompt_tokens", "completion_tokens")
    result: ClauseElement = statement.on_conflict_do_update(
        index_elements=[old.day, old.user_id, old.model_id],
        set_={
            **{name: old[name] + new[name] for name in summed},
            "cost_micros": func.coalesce(
                old.cost_micros + new.cost_micros, old.cost_micros, new.cost_micros
            ),
        },
    )
    return result


# Built once per dialect: the writer compiles each statement once (db/tx.py).
_UPSERT = {"sqlite": _upsert(sqlite), "postgresql": _upsert(postgresql)}
_NEW_NAME = {
    "sqlite": sqlite.insert(usage_names).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(usage_names).on_conflict_do_nothing(),
}
_INSERT_ROWS = usage_events.insert()
_ALL_NAMES = select(usage_names.c.name, usage_names.c.id)
_TOP_ID = select(func.coalesce(func.max(usage_names.c.id), 0))
# Retention. SQLite: the table has no index (every byte counts), but its rowid order is the
# order rows were written, which is (to within a request's duration) the order of `at`: look at
# the oldest rows by rowid only, never scan the table for old ones. PostgreSQL: the BRIN index on
# `at` finds the old block ranges; ctids, because the table has no key.
_PRUNE = {
    "sqlite": text(
        "DELETE FROM usage_events WHERE rowid IN "
        "(SELECT rowid FROM usage_events ORDER BY rowid LIMIT :chunk) AND at < :cutoff "
        "RETURNING 1 AS one"
    ).columns(one=Integer),
    "postgresql": text(
        "DELETE FROM usage_events WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM usage_events WHERE at < :cutoff LIMIT :chunk)) RETURNING 1 AS one"
    ).columns(one=Integer),
}


class Ledger:
    """The usage ledger of an app (see the module's docstring). A `Sink`."""

    def __init__(self, db: Database, flush_seconds: float) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self.dialect = "sqlite" if db.sqlite else "postgresql"
        self._buffer: deque[Row] = deque()
        self._batch: list[Row] = []  # taken for a flush that has not been committed yet
        self._names: dict[str, int] = {}  # interned names; ids are the database's, so shared
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # a flush failed and none succeeded since: log once
        self._dropping = False
        self.dropped = 0
        self.flushes = 0  # committed

    def __len__(self) -> int:
        """Rows not written yet."""
        return len(self._batch) + len(self._buffer)

    def started(self, request: Request) -> None:
        """Nothing: a request is written once it is over."""

    def record(self, record: Record) -> None:
        """Queue the request's row for the next flush (O(1), no I/O)."""
        request = record.request
        if len(self) >= BUFFER_MAX:
            self._buffer.popleft()
            self.dropped += 1
            if not self._dropping:  # once until a flush succeeds again
                self._dropping = True
                log.error("usage ledger: the database is away; dropping the oldest rows")
        self._buffer.append(
            Row(
                request.at_ms,
                request.user_id,
                request.token_id,
                request.route,
                request.upstream,
                request.model,
                record.outcome,
                record.prompt_tokens,
                record.completion_tokens,
                record.ttft_ms,
                record.duration_ms,
                record.estimated,
                record.cost_micros,
            )
        )
        if len(self._buffer) >= FLUSH_ROWS:
            self._wake.set()

    def start(self) -> None:
        """Start flushing in the background (in the serving process's loop)."""
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._flusher())

    async def close(self) -> None:
        """Stop the flusher and write everything still waiting (once more if that fails)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task  # not cancelled: it would not know whether its flush committed
            self._task = None
        if not await self.flush() and len(self):
            log.error("usage ledger: %d rows could not be written at shutdown", len(self))

    async def _flusher(self) -> None:
        while not self._closing:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write the rows waiting now, `FLUSH_MAX` per transaction. False if a transaction
        failed: its rows stay for the next flush."""
        async with self._lock:
            remaining = len(self)
            while remaining > 0:
                if not self._batch:
                    take = min(FLUSH_MAX, len(self._buffer))
                    self._batch = [self._buffer.popleft() for _ in range(take)]
                batch = self._batch
                try:
                    names = await self.db.run(
                        partial(_write, self.dialect, batch, dict(self._names))
                    )
                except Exception as exc:
                    if not self._failing:
                        self._failing = True
                        log.warning("usage ledger: a flush failed: %s", type(exc).__name__)
                    return False
                # Only now: a rolled-back transaction's names were never there.
                self._names.update(names)
                self._batch = []
                self.flushes += 1
                remaining -= len(batch)
                self._dropping = False
                if self._failing:
                    self._failing = False
                    log.info("usage ledger: writing again")
            return True


def _write(dialect: str, rows: list[Row], known: Mapping[str, int], tx: Tx) -> dict[str, int]:
    """One flush's transaction: intern new names, insert the rows, add up the day's roll-ups.
    Returns the names it interned. Runs in the writer (a thread, on SQLite): touches no state
    of the ledger's, and may run twice on PostgreSQL (its batch retried alone)."""
    wanted = {name[:NAME_MAX] for row in rows for name in (row.route, row.upstream, row.model)}
    wanted.update(row.outcome[:NAME_MAX] for row in rows)
    new = _intern(tx, dialect, wanted - known.keys()) if not wanted <= known.keys() else {}
    ids = {**known, **new}
    tx.run_many(
        _INSERT_ROWS,
        [
            {
                "at": row.at,
                "user_id": row.user_id,
                "token_id": row.token_id,
                "route_id": ids[row.route[:NAME_MAX]],
                "upstream_id": ids[row.upstream[:NAME_MAX]],
                "model_id": ids[row.model[:NAME_MAX]],
                "outcome_id": ids[row.outcome[:NAME_MAX]],
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "ttft_ms": row.ttft_ms,
                "duration_ms": row.duration_ms,
                "estimated": row.estimated,
            }
            for row in rows
        ],
    )
    tx.run_many(_UPSERT[dialect], _rollups(rows, ids))
    return new


def _rollups(rows: Iterable[Row], ids: Mapping[str, int]) -> list[dict[str, Any]]:
    """The rows summed per UTC day x user x model."""
    sums: dict[tuple[int, int, int], list[int]] = {}
    costs: dict[tuple[int, int, int], int | None] = {}
    for row in rows:
        key = (row.at // _DAY_MS, row.user_id or 0, ids[row.model[:NAME_MAX]])
        counts = sums.get(key)
        if counts is None:
            counts = sums[key] = [0, 0, 0, 0, 0]
            costs[key] = None
        counts[0] += 1
        counts[1] += row.outcome not in NOT_ERRORS
        counts[2] += row.estimated
        counts[3] += row.prompt_tokens
        counts[4] += row.completion_tokens
        if row.cost_micros is not None:
            costs[key] = (costs[key] or 0) + row.cost_micros
    return [
        {
            "day": _EPOCH + timedelta(days=day),
            "user_id": user_id,
            "model_id": model_id,
            "requests": counts[0],
            "errors": counts[1],
            "estimated": counts[2],
            "prompt_tokens": counts[3],
            "completion_tokens": counts[4],
            "cost_micros": costs[(day, user_id, model_id)],
        }
        # In key order: two processes adding to the same days lock their rows in one order
        # (PostgreSQL would otherwise deadlock them now and then).
        for (day, user_id, model_id), counts in sorted(sums.items())
    ]


def _intern(tx: Tx, dialect: str, names: set[str]) -> dict[str, int]:
    """Ids for `names`, interning those not in `usage_names` yet. Several processes (on several
    hosts, with PostgreSQL) may intern at once: an id or a name another transaction took makes
    the INSERT do nothing, and the name is read back -- theirs, or tried again with the next
    id."""
    found = {name: id_ for name, id_ in tx.rows(_ALL_NAMES, {}) if name in names}
    for name in sorted(names - found.keys()):
        while name not in found:
            top = int(tx.rows(_TOP_ID, {})[0][0])
            if top >= SMALLINT_MAX:
                raise OverflowError("usage_names is full")
            tx.run(_NEW_NAME[dialect], {"id": top + 1, "name": name})
            found.update((n, i) for n, i in tx.rows(_ALL_NAMES, {}) if n == name)
    return found


async def prune(db: Database, retention_days: int, now_ms: int) -> int:
    """Delete raw rows older than `retention_days` (roll-ups stay), `PRUNE_CHUNK` per
    transaction, at most `PRUNE_CHUNKS` chunks; the number deleted."""
    statement = _PRUNE["sqlite" if db.sqlite else "postgresql"]
    parameters = {"cutoff": now_ms - retention_days * _DAY_MS, "chunk": PRUNE_CHUNK}
    deleted = 0
    for _ in range(PRUNE_CHUNKS):
        gone = await db.run(lambda tx: len(tx.rows(statement, parameters)))
        deleted += gone
        if gone < PRUNE_CHUNK:
            break
    return deleted
