#!/usr/bin/env python
"""What a turn of a conversation costs the service in database work, in-process: the CPU of
`turns.send` (the question and the reply's placeholder), one checkpoint and the final write.

    .venv/bin/python bench/turn_bench.py                          # SQLite and PostgreSQL, ~1 min
    .venv/bin/python bench/turn_bench.py --databases sqlite --turns 500 --repeat 5

For each database (SQLite in a temporary DATA_DIR; PostgreSQL in a throwaway cluster, as the
tests start one, when Debian's postgresql is installed): `--turns` conversations, each with one
turn already (its title set), then `--repeat` rounds of: every conversation gets a turn, first one
at a time ("sequential"), then all at once ("concurrent", as a crowd of users sending together).
Each operation is timed with `time.process_time()`: this process's CPU, its threads included
(SQLite's writer), the PostgreSQL server's processes not. Medians over the rounds, per turn.

A script, not a test: it prints figures. bench/conversations_bench.py measures the same work
inside the running service, against a stateless stream.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import URL  # noqa: E402

from quartchat.auth import users  # noqa: E402
from quartchat.conversations import store, turns  # noqa: E402
from quartchat.db import Database, database_url  # noqa: E402
from quartchat.db.migrate import migrate  # noqa: E402

REPLY = "tok " * 200
USAGE = {"prompt_tokens": 10, "completion_tokens": 200, "total_tokens": 210}
OPERATIONS = ("send", "checkpoint", "finish")


async def sent_into(
    send: Callable[[str], Awaitable[turns.Turn]], into: list[turns.Turn], conversation_id: str
) -> None:
    into.append(await send(conversation_id))


async def cpu_per_call(calls: Sequence[Callable[[], Awaitable[Any]]], together: bool) -> float:
    """Milliseconds of CPU per call."""
    start = time.process_time()
    if together:
        await asyncio.gather(*(call() for call in calls))
    else:
        for call in calls:
            await call()
    return (time.process_time() - start) / len(calls) * 1000


async def one_database(url: URL, count: int, repeat: int) -> dict[str, dict[str, float]]:
    await migrate(url)
    db = Database.open(url)
    try:
        async with db.write() as connection:
            owner = (await users.create(connection, "bench@example.com", None)).id
            made = [
                await store.create(connection, owner, title=turns.DEFAULT_TITLE, settings={})
                for _ in range(count)
            ]
        ids = [c.id for c in made]
        sent = 0

        async def send(conversation_id: str) -> turns.Turn:
            nonlocal sent
            sent += 1
            return await turns.send(
                db, owner, conversation_id, content="a question", client_id=f"b{sent}",
                parent_id=None,
            )  # fmt: skip

        def checkpoint(turn: turns.Turn) -> Awaitable[None]:
            return db.run(
                partial(store.checkpoint, owner_id=owner, message_id=turn.reply.id,
                        content=REPLY[:400])
            )  # fmt: skip

        def finish(turn: turns.Turn) -> Awaitable[None]:
            return db.run(
                partial(store.finish, owner_id=owner, message_id=turn.reply.id, content=REPLY,
                        status="complete", usage=USAGE)
            )  # fmt: skip

        for turn in await asyncio.gather(*(send(i) for i in ids)):  # titles, warm code
            await finish(turn)
        results: dict[str, dict[str, list[float]]] = {}
        for _ in range(repeat):
            for mode in ("sequential", "concurrent"):
                together = mode == "concurrent"
                figures = results.setdefault(mode, {op: [] for op in OPERATIONS})
                made_turns: list[turns.Turn] = []
                keep = partial(sent_into, send, made_turns)
                figures["send"].append(
                    await cpu_per_call([partial(keep, i) for i in ids], together)
                )
                for name, write in (("checkpoint", checkpoint), ("finish", finish)):
                    calls = [partial(write, t) for t in made_turns]
                    figures[name].append(await cpu_per_call(calls, together))
        return {
            mode: {op: statistics.median(v) for op, v in figures.items()}
            for mode, figures in results.items()
        }
    finally:
        await db.close()


def postgres() -> Any:
    from tests.postgres import Cluster, postgres_bin

    bin_dir = postgres_bin()
    if bin_dir is None:
        return None
    return Cluster(bin_dir).start()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--turns", type=int, default=200, help="conversations, a turn each")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians are printed)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"turn_bench: {args.turns} turns, {args.repeat} rounds; CPU per turn, medians\n")
    print(f"{'database':>10}  {'mode':>10}  {'send':>8}  {'checkpoint':>10}  {'finish':>8}  all")
    for name in args.databases.split(","):
        cluster = None
        if name == "postgresql":
            cluster = postgres()
            if cluster is None:
                print(f"{name:>10}  (no PostgreSQL here: apt-get install postgresql)")
                continue
            url = cluster.url
        else:
            url = database_url(None, Path(tempfile.mkdtemp(prefix="turn-bench-")))
        try:
            figures = asyncio.run(one_database(url, args.turns, args.repeat))
        finally:
            if cluster is not None:
                cluster.stop()
        for mode, ops in figures.items():
            send, checkpoint, finish = (ops[op] for op in OPERATIONS)
            print(
                f"{name:>10}  {mode:>10}  {send:5.2f} ms  {checkpoint:7.2f} ms  {finish:5.2f} ms"
                f"  {send + checkpoint + finish:.2f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
