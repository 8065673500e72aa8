#!/usr/bin/env python
"""What the usage ledger costs: bytes per raw row stored, and CPU per row recorded and flushed.

    .venv/bin/python bench/ledger_bench.py                       # 200,000 rows; about a minute
    .venv/bin/python bench/ledger_bench.py --rows 50000 --databases sqlite

For each database (SQLite, a file in a temporary directory; PostgreSQL, a throwaway cluster as
tests/postgres.py starts it) a freshly migrated schema gets `--rows` rows through the real
`Ledger` (record, then flush: `FLUSH_MAX` rows per transaction through `Database.run`), made as
a busy gateway's would be: 200 users, 6 models over 2 upstreams, mostly "ok", tokens and
latencies spread over realistic ranges, times over the last 30 days.

Printed per database:
- bytes per raw row: SQLite, the `usage_events` pages (`dbstat`) after VACUUM, over the rows;
  PostgreSQL, `pg_total_relation_size('usage_events')` (heap, BRIN index, free-space and
  visibility maps) after VACUUM, over the rows. The issue's target: at most 100.
- record: CPU per `Ledger.record` call (the request path's whole share).
- flush: this process's CPU per row flushed (on SQLite that includes the writer thread and
  SQLite itself; on PostgreSQL the server's own CPU is not counted), and the wall time of one
  transaction of `FLUSH_MAX` rows.
Prints, enforces nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from quartchat.db import Database, database_url  # noqa: E402
from quartchat.db.migrate import migrate  # noqa: E402
from quartchat.usage import ledger as ledger_module  # noqa: E402
from quartchat.usage.ledger import Ledger  # noqa: E402
from quartchat.usage.meter import Record, Request  # noqa: E402

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "text-embedding-3-small"),
    ("ollama", "llama3.1:8b"),
    ("ollama", "qwen2.5-coder:7b"),
    ("ollama", "nomic-embed-text"),
]
ROUTES = ["page", "api", "v1.chat", "v1.embeddings"]
OUTCOMES = ["ok"] * 95 + ["disconnected"] * 3 + ["UPSTREAM_ERROR", "RATE_LIMITED"]


def records(count: int, seed: int = 18) -> list[Record]:
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000
    start = now_ms - 30 * ledger_module._DAY_MS
    step = (now_ms - start) // count
    made = []
    for i in range(count):
        upstream, model = rng.choice(MODELS)
        streamed = rng.random() < 0.7
        request = Request(
            rng.choice(ROUTES),
            "",
            rng.randrange(1, 201),
            rng.choice([None, rng.randrange(1, 500)]),
            upstream=upstream,
            model=model,
            at_ms=start + i * step,
        )
        made.append(
            Record(
                request,
                rng.choice(OUTCOMES),
                200,
                rng.randrange(10, 8000),
                rng.randrange(0, 2000),
                rng.random() < 0.05,
                rng.randrange(80, 3000) if streamed else None,
                rng.randrange(100, 60_000),
                rng.randrange(0, 50_000) if rng.random() < 0.5 else None,
            )
        )
    return made


async def measure(kind: str, url: URL, rows: int) -> dict[str, float]:
    await migrate(url)
    db = Database.open(url)
    ledger = Ledger(db, 3600.0)
    made = records(rows)
    flushes = []
    record_cpu = flush_cpu = 0.0
    try:
        for first in range(0, rows, ledger_module.FLUSH_MAX):
            batch = made[first : first + ledger_module.FLUSH_MAX]
            began = time.process_time()
            for one in batch:
                ledger.record(one)
            record_cpu += time.process_time() - began
            began, wall = time.process_time(), time.perf_counter()
            assert await ledger.flush()
            flush_cpu += time.process_time() - began
            flushes.append(time.perf_counter() - wall)
    finally:
        await db.close()
    stored = await stored_bytes(kind, url)
    return {
        "bytes_per_row": stored / rows,
        "record_us": record_cpu / rows * 1e6,
        "flush_cpu_us": flush_cpu / rows * 1e6,
        "flush_ms": sorted(flushes)[len(flushes) // 2] * 1000,
    }


async def stored_bytes(kind: str, url: URL) -> int:
    """The raw table's size on disk, after VACUUM."""
    if kind == "sqlite":
        with sqlite3.connect(url.database or "") as connection:
            connection.execute("VACUUM")
            try:
                [(size,)] = connection.execute(
                    "SELECT sum(pgsize) FROM dbstat WHERE name = 'usage_events'"
                ).fetchall()
            except sqlite3.OperationalError:  # built without dbstat: the pages the table uses
                raise SystemExit("this SQLite has no dbstat") from None
            return int(size)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("VACUUM ANALYZE usage_events"))
            size = await connection.scalar(text("SELECT pg_total_relation_size('usage_events')"))
            return int(size)
    finally:
        await engine.dispose()


async def postgres_database() -> tuple[URL, object]:
    from tests.postgres import Cluster, postgres_bin

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL here (apt-get install postgresql)")
    cluster = Cluster(bin_dir).start()
    engine = create_async_engine(cluster.url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text('CREATE DATABASE "ledger_bench"'))
    finally:
        await engine.dispose()
    return make_url(str(cluster.url.set(database="ledger_bench"))), cluster


async def main(args: argparse.Namespace) -> None:
    print(f"{args.rows} rows, {ledger_module.FLUSH_MAX} per flush")
    print(f"{'database':<12}{'bytes/row':>10}{'record us':>11}{'flush us/row':>14}{'flush ms':>10}")
    for kind in args.databases.split(","):
        cluster = None
        directory = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
        try:
            if kind == "sqlite":
                url = database_url(None, directory)
            else:
                url, cluster = await postgres_database()
            result = await measure(kind, url, args.rows)
        finally:
            if cluster is not None:
                cluster.stop()  # type: ignore[attr-defined]
            shutil.rmtree(directory, ignore_errors=True)
        print(
            f"{kind:<12}{result['bytes_per_row']:>10.1f}{result['record_us']:>11.2f}"
            f"{result['flush_cpu_us']:>14.2f}{result['flush_ms']:>10.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    asyncio.run(main(parser.parse_args()))
