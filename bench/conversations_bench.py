#!/usr/bin/env python
"""Benchmark of conversations kept on the server (issue 10): what history costs the relay, how
fast the sidebar and search stay at 10,000 conversations, and how much disk a message takes.

    .venv/bin/python bench/conversations_bench.py                 # about 4 minutes
    .venv/bin/python bench/conversations_bench.py --databases sqlite --json out.json

With relay_bench's pieces (imported from it): the fake upstream and this script (the load
generator, raw asyncio protocols under uvloop, and the seeding) pinned to the harness core, the
service (`python -m quartchat`, `AUTH_MODE=accounts`, the first admin from ADMIN_EMAIL /
ADMIN_PASSWORD, an API token made through the API) pinned to core 0, CPU time from /proc. Per
database (`--databases`: SQLite in a temporary DATA_DIR, and PostgreSQL in a throwaway cluster
started as tests/postgres.py does):

1. Data: `--conversations` conversations of `--messages` messages each (a chain of questions and
   replies; questions ~150 characters, replies ~1,100, drawn from a Zipf vocabulary, with times
   spread over a year) for the admin, and `--others` other users with `--other-conversations`
   each, bulk-inserted through quartchat's tables (SQLAlchemy Core, so SQLite's FTS5 triggers
   and PostgreSQL's GIN index are filled as for any row); then PostgreSQL is ANALYZEd (its
   autovacuum would) and SQLite is left as the service leaves it.
2. Latency, one request at a time over a keep-alive connection, the kinds interleaved:
   `GET /api/conversations` (the first page, and a page whose `before` cursor is the
   conversation 50 from the end: a deep keyset page) and `GET /api/search?q=` with a word in
   almost every message, a prefix as typed, two words, a rare word and a word in five messages.
   p50 / p99 / max against the targets (list p99 < 20 ms, search p99 < 100 ms).
3. Size on disk per 1,000 messages: the SQLite file and its WAL after a checkpoint, or
   pg_total_relation_size of messages and conversations (with their indexes and TOAST).
4. CPU per relayed chunk (on `--cpu-databases`, SQLite by default, after 1-3): `--streams`
   concurrent streams of `--chunks` chunks with history on (`POST
   /api/conversations/{id}/messages`, each stream a new turn in a conversation of its own) and
   stateless (`POST /api/chat/stream`), same service, same token, in phases that alternate,
   `--repeat` pairs: the ratio history / stateless per pair (target: within 10 %), and a check
   that every reply was saved complete.

A script, not a test: it prints the figures next to the targets and enforces none; it exits 0
unless the harness itself failed. Logs go to artifacts/bench/conversations-logs-*/.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import itertools
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accounts_bench import (
    ADMIN_EMAIL,
    FIRST_CHUNK,
    Service,
    call,
    code_version,
    service_env,
    sign_in,
)
from relay_bench import (
    HOST,
    ROOT,
    WORD,
    Bench,
    Child,
    Response,
    StreamPhase,
    Target,
    child_env,
    free_port,
    http_post,
    judge_service_stream,
    machine,
    on_uvloop,
    pct,
    raise_fd_limit,
    ratio,
    say,
    service_argv,
    spawn,
    stop_children,
    stop_children_on_exit,
    table,
    upstream_argv,
    wait_for_port,
    write_json,
)
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from quartchat.db import create_engine
from quartchat.db.tables import conversations, messages, users

TARGET_CPU_RATIO = 1.10  # CPU per chunk with history: at most this x the stateless stream's
TARGET_LIST_P99_MS = 20.0
TARGET_SEARCH_P99_MS = 100.0
DATABASES = ("sqlite", "postgresql")

# -- the text of the messages ----------------------------------------------------------------


def words(text: str) -> list[str]:
    return text.split()


COMMON = words(
    "the of and to a in is that it for you this with on as are be can or if not your by an "
    "from at use will I we have but which one all there more when so what their also has "
    "each should then how do these other into only need would its some like may any"
)
TECH = words(
    "function data file error value list code example python server request configuration "
    "config conflict table query database string number return class method type test "
    "memory time version user model output input option process network image design write"
)
SYLLABLES = words("ka lo mi nu pe ra si to vu ze bar con dis fen gri hol jun kel mor nap pli qua")
VOCABULARY_SIZE = 30_000
RARE_RANK = 20_000  # a word about 1 in 200,000: in a hundred or so of the messages
MIDDLING_RANK = 500  # a word in a few percent of the messages
MARKER = "quokkamarker"  # put in exactly five of the admin's messages


def vocabulary() -> list[str]:
    vocab = list(dict.fromkeys([*COMMON, *TECH]))
    seen = set(vocab)
    for n in itertools.count():
        if len(vocab) >= VOCABULARY_SIZE:
            break
        word, k = "", n
        for _ in range(2 + n % 3):
            word += SYLLABLES[k % len(SYLLABLES)]
            k //= len(SYLLABLES)
        word += str(n % 7) if word in seen else ""
        if word not in seen:
            seen.add(word)
            vocab.append(word)
    return vocab


class Writer:
    """Messages of realistic length: words drawn with Zipf's law (rank r: weight 1/r)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.words = vocabulary()
        self.cum = list(itertools.accumulate(1 / (r + 1) for r in range(len(self.words))))

    def text(self, median_words: float) -> str:
        n = max(2, int(self.random.lognormvariate(math.log(median_words), 0.7)))
        words = self.random.choices(self.words, cum_weights=self.cum, k=n)
        # Sentences of ~12 words; a reply gets a paragraph break now and then.
        out = []
        for i in range(0, n, 12):
            sentence = " ".join(words[i : i + 12])
            out.append(sentence[:1].upper() + sentence[1:] + ".")
        return (
            " ".join(out)
            if n < 60
            else "\n\n".join(" ".join(out[i : i + 5]) for i in range(0, len(out), 5))
        )

    def title(self) -> str:
        return " ".join(self.random.choices(self.words[:3000], k=4)).capitalize()


def uuid7(millis: int, rng: random.Random) -> str:
    value = (millis << 80) | (0x7 << 76) | (rng.getrandbits(76))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


# -- seeding ---------------------------------------------------------------------------------


async def add_users(engine: AsyncEngine, count: int) -> list[int]:
    """Other users (no password: they never log in here)."""
    at = datetime.now(UTC)
    ids = []
    async with engine.begin() as connection:
        for i in range(count):
            result = await connection.execute(
                insert(users)
                .values(
                    email=f"other{i}@example.com",
                    role="user",
                    status="active",
                    created_at=at,
                    updated_at=at,
                )
                .returning(users.c.id)
            )
            ids.append(int(result.scalar_one()))
    return ids


async def seed(
    engine: AsyncEngine,
    writer: Writer,
    owners: dict[int, int],
    messages_n: int,
    *,
    marked_owner: int,
    markers: int = 5,
    batch: int = 250,
) -> dict[int, int]:
    """`owners[o]` conversations of `messages_n` messages for each owner o, written in the order
    they happened (all owners interleaved, as a service writes them, so rowids follow time);
    conversations spread over the last year, a turn a minute. Returns messages per owner."""
    rng = writer.random
    end = int(time.time() * 1000) - 3_600_000
    year = 365 * 86_400_000
    plan = sorted(
        (end - rng.randrange(year), owner) for owner, n in owners.items() for _ in range(n)
    )
    mine = [i for i, (_, owner) in enumerate(plan) if owner == marked_owner]
    marked = {(c, rng.randrange(messages_n)) for c in rng.sample(mine, markers)}
    written = dict.fromkeys(owners, 0)
    for start in range(0, len(plan), batch):
        conversation_rows: list[dict[str, Any]] = []
        message_rows: list[dict[str, Any]] = []
        for c in range(start, min(start + batch, len(plan))):
            t0, owner = plan[c]
            conversation_id = uuid7(t0, rng)
            parent = None
            for m in range(messages_n):
                at = t0 + m * 60_000 + rng.randrange(60_000)
                role = "user" if m % 2 == 0 else "assistant"
                content = writer.text(25 if role == "user" else 180)
                if (c, m) in marked:
                    content += f" {MARKER}"
                message_id = uuid7(at, rng)
                stamp = datetime.fromtimestamp(at / 1000, UTC)
                message_rows.append({
                    "id": message_id, "conversation_id": conversation_id, "parent_id": parent,
                    "client_id": None, "role": role, "content": content, "status": "complete",
                    "model": None if role == "user" else "fake-large",
                    "finish_reason": None if role == "user" else "stop",
                    "prompt_tokens": None, "completion_tokens": None, "total_tokens": None,
                    "error": None, "created_at": stamp, "updated_at": stamp,
                })  # fmt: skip
                parent = message_id
            last = datetime.fromtimestamp((t0 + messages_n * 60_000) / 1000, UTC)
            conversation_rows.append({
                "id": conversation_id, "owner_id": owner, "client_id": None,
                "title": writer.title(), "settings": {"model": "fake-large", "system": ""},
                "leaf_id": parent, "pinned": False, "archived": False, "revision": messages_n,
                "created_at": datetime.fromtimestamp(t0 / 1000, UTC), "updated_at": last,
                "deleted_at": None,
            })  # fmt: skip
            written[owner] += messages_n
        message_rows.sort(key=lambda row: row["created_at"])
        async with engine.begin() as connection:
            await connection.execute(insert(conversations), conversation_rows)
            await connection.execute(insert(messages), message_rows)
    return written


async def prepare_data(args: argparse.Namespace, url: URL, owner_id: int) -> dict[str, Any]:
    """Seed, then the cursor of the deep page and the database's own view of what it holds."""
    engine = create_engine(url)
    try:
        t0 = time.perf_counter()
        writer = Writer(args.seed)
        others = await add_users(engine, args.others)
        owners = {owner_id: args.conversations} | dict.fromkeys(others, args.other_conversations)
        written = await seed(engine, writer, owners, args.messages, marked_owner=owner_id)
        total, mine = sum(written.values()), written[owner_id]
        seconds = time.perf_counter() - t0
        async with engine.connect() as connection:
            if url.get_backend_name() == "postgresql":
                await connection.execute(text("ANALYZE"))
                await connection.commit()
            deep = (
                await connection.execute(
                    select(conversations.c.updated_at, conversations.c.id)
                    .where(conversations.c.owner_id == owner_id)
                    .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
                    .offset(max(0, args.conversations - 50 - 1))
                    .limit(1)
                )
            ).one()
            text_bytes = (
                await connection.execute(select(func.sum(func.length(messages.c.content))))
            ).scalar_one()
            rare = writer.words[RARE_RANK]
            middling = writer.words[MIDDLING_RANK]
            counts = {}
            for word in (rare, middling):  # about: a word at the end of a sentence is left out
                query = select(func.count()).where(messages.c.content.contains(f" {word} "))
                counts[word] = int((await connection.execute(query)).scalar_one())
    finally:
        await engine.dispose()
    return {
        "seconds": seconds,
        "messages": total,
        "messages_mine": mine,
        "conversations_mine": args.conversations,
        "others": len(others),
        "chars_per_message": int(text_bytes) / total,
        "deep_cursor": f"{deep.updated_at.isoformat()}|{deep.id}",
        "rare_word": rare,
        "middling_word": middling,
        "word_messages_about": counts,
    }


# -- latency ---------------------------------------------------------------------------------


def latency_queries(data: dict[str, Any]) -> dict[str, str]:
    cursor = urllib.parse.quote(data["deep_cursor"], safe="")
    return {
        "list, first page": "/api/conversations",
        "list, deep page": f"/api/conversations?before={cursor}",
        "search, common word": "/api/search?q=the",
        "search, prefix as typed": "/api/search?q=conf",
        "search, two words": "/api/search?q=data+function",
        "search, middling word": f"/api/search?q={data['middling_word']}",
        "search, rare word": f"/api/search?q={data['rare_word']}",
        "search, in 5 messages": f"/api/search?q={MARKER}",
    }


def measure_latency(
    service: Child, port: int, token: str, paths: dict[str, str], rounds: int, budget: float
) -> dict[str, Any]:
    """Each query `rounds` times (fewer if that takes over `budget` seconds), one request at a
    time, the kinds interleaved (after 3 rounds of warm-up); each answer checked."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"}
    times: dict[str, list[float]] = {name: [] for name in paths}
    cpu = dict.fromkeys(paths, 0.0)  # the service's, summed: /proc counts in 10 ms ticks
    items: dict[str, int] = {}
    stop_at = time.monotonic() + budget
    try:
        for i in range(rounds + 3):
            if i > 3 and time.monotonic() > stop_at:
                say(f"  latency: stopped after {i - 3} rounds (--latency-seconds)")
                break
            for name, path in paths.items():
                cpu0, t0 = service.cpu_seconds(), time.perf_counter()
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                elapsed = (time.perf_counter() - t0) * 1000
                spent = service.cpu_seconds() - cpu0
                if response.status != 200:
                    raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
                items[name] = len(json.loads(body)["items"])
                if i >= 3:
                    times[name].append(elapsed)
                    cpu[name] += spent
    finally:
        connection.close()
    return {
        name: {
            "path": paths[name],
            "items": items[name],
            "p50_ms": pct(t, 50),
            "p99_ms": pct(t, 99),
            "max_ms": max(t),
            "n": len(t),
            "cpu_ms": cpu[name] * 1000 / len(t),
        }
        for name, t in times.items()
    }


# -- size ------------------------------------------------------------------------------------


async def size_report(url: URL, data_dir: Path, total: int) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        path = data_dir / "quartchat.db"
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size = connection.execute("PRAGMA page_size").fetchone()[0]
            freelist = connection.execute("PRAGMA freelist_count").fetchone()[0]
        file_bytes = path.stat().st_size
        wal = path.with_name(path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        return {
            "bytes": file_bytes + wal_bytes,
            "file_bytes": file_bytes,
            "wal_bytes": wal_bytes,
            "free_bytes": freelist * page_size,
            "per_1000_messages": (file_bytes + wal_bytes) / total * 1000,
        }
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sizes = {}
            for name in ("messages", "conversations"):
                row = (
                    await connection.execute(
                        text(
                            "SELECT pg_total_relation_size(:t), pg_relation_size(:t),"
                            " pg_indexes_size(:t)"
                        ),
                        {"t": name},
                    )
                ).one()
                sizes[name] = {"total": row[0], "heap": row[1], "indexes": row[2]}
            gin = (
                await connection.execute(
                    text("SELECT pg_relation_size('ix_messages_search_vector')")
                )
            ).scalar_one()
            database = (
                await connection.execute(text("SELECT pg_database_size(current_database())"))
            ).scalar_one()
    finally:
        await engine.dispose()
    both = sizes["messages"]["total"] + sizes["conversations"]["total"]
    return {
        "bytes": both,
        "tables": sizes,
        "search_index_bytes": gin,
        "database_bytes": database,
        "per_1000_messages": both / total * 1000,
    }


# -- CPU per chunk, history on vs stateless --------------------------------------------------


class TurnBench(Bench):
    """relay_bench's phases, where a target can make a new request for every stream (each turn
    needs a client_id of its own)."""

    def __init__(self, *args: Any, makers: dict[str, Callable[[], bytes]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.makers = makers

    async def one_stream(
        self, target: Target, phase: StreamPhase, deadline: float
    ) -> Response | None:
        maker = self.makers.get(target.name)
        if maker is not None:
            target = dataclasses.replace(target, stream_request=maker())
        return await super().one_stream(target, phase, deadline)


def make_conversations(service: Service, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {service.token}"}
    ids = []
    for i in range(n):
        status, _, body = call(
            service.port, "POST", "/api/conversations", {"title": f"bench {i}"}, headers
        )
        if status != 201:
            raise SystemExit(f"POST /api/conversations: {status} {body[:300]!r}")
        ids.append(json.loads(body)["id"])
    return ids


async def cpu_runs(args: argparse.Namespace, service: Service, upstream: Child) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {service.token}"}
    expected = WORD * args.chunks
    stateless_body = json.dumps({"messages": [{"role": "user", "content": "benchmark"}]}).encode()

    def judge(status: int, body: bytes) -> Any:
        return judge_service_stream(status, body, expected)

    stateless = Target(
        "stateless",
        service.port,
        http_post("/api/chat/stream", service.port, stateless_body, close=True, headers=headers),
        b"",
        FIRST_CHUNK,
        judge,
        service.child,
    )
    history = dataclasses.replace(stateless, name="history")
    ids = make_conversations(service, args.streams)
    turn = itertools.count()
    slots = itertools.cycle(ids)

    def next_turn() -> bytes:
        n = next(turn)
        conversation_id = next(slots)
        body = json.dumps({"content": f"benchmark question {n}", "client_id": f"b{n}"}).encode()
        path = f"/api/conversations/{conversation_id}/messages"
        return http_post(path, service.port, body, close=True, headers=headers)

    bench = TurnBench(
        args,
        [service.child],
        upstream,
        {"stateless": stateless, "history": history},
        makers={"history": next_turn},
    )
    # Warm-up: code paths, the pool, the first turn of every conversation (its title).
    for t in (stateless, history):
        phase = await bench.stream_phase(t, args.streams)
        if phase.errors:
            raise SystemExit(f"warm-up of {t.name}: {phase.errors} {phase.error_samples}")
    pairs = []
    for i in range(args.repeat):
        order = (stateless, history) if i % 2 == 0 else (history, stateless)
        pair: dict[str, Any] = {}
        for t in order:
            await asyncio.sleep(args.pause)
            s = (await bench.stream_phase(t, args.streams)).summary()
            s["us_per_chunk"] = ratio(s["service_cpu_s"], s["chunks"]) * 1e6
            s["other_busy"] = max(0.0, s["service_core_busy_s"] - s["service_cpu_s"]) / s["wall_s"]
            pair[t.name] = s
            say(
                f"  pair {i + 1}, {t.name}: {s['us_per_chunk']:.1f} us/chunk, errors "
                f"{s['errors']}, other work on the core {100 * s['other_busy']:.0f} %"
            )
        pair["ratio"] = ratio(pair["history"]["us_per_chunk"], pair["stateless"]["us_per_chunk"])
        pairs.append(pair)
    turns_sent = next(turn)
    return {
        "pairs": pairs,
        "ratio_median": statistics.median(p["ratio"] for p in pairs),
        "ratios": [p["ratio"] for p in pairs],
        "stateless_us_per_chunk": statistics.median(p["stateless"]["us_per_chunk"] for p in pairs),
        "history_us_per_chunk": statistics.median(p["history"]["us_per_chunk"] for p in pairs),
        "errors": sum(p[k]["errors"] for p in pairs for k in ("stateless", "history")),
        "turns_sent": turns_sent,
        "conversations": ids,
    }


async def saved_replies(url: URL, conversation_ids: list[str], expected: str) -> dict[str, int]:
    """The replies of the bench's turns, by status (and whether a complete one has the text)."""
    engine = create_engine(url)
    length = func.length(messages.c.content)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(messages.c.status, length, func.count())
                .where(
                    messages.c.conversation_id.in_(conversation_ids),
                    messages.c.role == "assistant",
                )
                .group_by(messages.c.status, length)
            )
            out: dict[str, int] = {}
            for status, size, count in rows:
                right = size == len(expected)
                key = status if right or status != "complete" else "complete, wrong length"
                out[key] = out.get(key, 0) + int(count)
    finally:
        await engine.dispose()
    return out


# -- the services ----------------------------------------------------------------------------


class Postgres:
    """A throwaway PostgreSQL cluster (tests/postgres.py) and a database in it."""

    def __init__(self) -> None:
        if str(ROOT) not in sys.path:
            sys.path.append(str(ROOT))
        from tests.postgres import Cluster, postgres_bin

        bin_dir = postgres_bin()
        if bin_dir is None:
            raise SystemExit("no PostgreSQL here (apt-get install postgresql)")
        self.cluster = Cluster(bin_dir).start()

    async def database(self, name: str) -> URL:
        engine = create_engine(self.cluster.url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return make_url(str(self.cluster.url.set(database=name)))

    def stop(self) -> None:
        self.cluster.stop()


def start_service(
    args: argparse.Namespace, kind: str, url: URL, data_dir: Path, uport: int, logdir: Path
) -> Service:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = service_env(child_env(), uport, port, data_dir, args.log_level, True)
    env.update(ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=args.admin_password)
    if kind == "postgresql":
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    command = service_argv(sys.executable, "", report=False)
    child = spawn(kind, command, args.service_cpu, env, logdir)
    service = Service(kind, child, port, data_dir, True)
    wait_for_port(child, port, timeout=60)
    sign_in(service, args.admin_password)
    return service


async def admin_id(url: URL) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            query = select(users.c.id).where(users.c.email == ADMIN_EMAIL)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def one_database(
    args: argparse.Namespace,
    kind: str,
    url: URL,
    data_dir: Path,
    uport: int,
    upstream: Child,
    logdir: Path,
) -> dict[str, Any]:
    service = start_service(args, kind, url, data_dir, uport, logdir)
    out: dict[str, Any] = {}
    try:
        if args.conversations > 0:
            say(f"{kind}: seeding ...")
            data = await prepare_data(args, url, await admin_id(url))
            say(
                f"  {data['messages']:,} messages ({data['messages_mine']:,} the admin's) in "
                f"{data['seconds']:.0f} s, {data['chars_per_message']:.0f} characters each on average"
            )
            out["data"] = data
            out["size"] = await size_report(url, data_dir, data["messages"])
            say(f"{kind}: latency ...")
            out["latency"] = await asyncio.to_thread(
                measure_latency,
                service.child,
                service.port,
                service.token,
                latency_queries(data),
                args.rounds,
                args.latency_seconds,
            )
        if kind in args.cpu_databases and args.repeat > 0:
            say(f"{kind}: CPU per chunk, history vs stateless ...")
            cpu = await cpu_runs(args, service, upstream)
            cpu["saved"] = await saved_replies(url, cpu.pop("conversations"), WORD * args.chunks)
            out["cpu"] = cpu
    finally:
        service.child.stop()
    return out


# -- report ----------------------------------------------------------------------------------


def check_targets(res: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    for kind, r in res["databases"].items():
        if "latency" in r:
            lat = r["latency"]
            lists = [v["p99_ms"] for k, v in lat.items() if k.startswith("list")]
            searches = [v["p99_ms"] for k, v in lat.items() if k.startswith("search")]
            out[f"{kind}: list p99 < {TARGET_LIST_P99_MS:g} ms"] = (
                max(lists) < TARGET_LIST_P99_MS,
                f"worst p99 {max(lists):.1f} ms",
            )
            out[f"{kind}: search p99 < {TARGET_SEARCH_P99_MS:g} ms"] = (
                max(searches) < TARGET_SEARCH_P99_MS,
                f"worst p99 {max(searches):.1f} ms",
            )
        if "cpu" in r:
            c = r["cpu"]
            out[f"{kind}: CPU per chunk with history within 10 % of stateless"] = (
                c["ratio_median"] <= TARGET_CPU_RATIO,
                f"history / stateless {c['ratio_median']:.3f} (median of "
                + ", ".join(f"{x:.3f}" for x in c["ratios"])
                + ")",
            )
    return out


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def print_report(res: dict[str, Any], w: Callable[[str], Any] = sys.stdout.write) -> None:
    m, a = res["machine"], res["config"]
    w(
        f"\nconversations_bench: {m['cpu_model']} x{m['nproc']}, Python {m['python']}; "
        f"load average {res['loadavg'][0]:.2f} at the start, {res['loadavg'][1]:.2f} at the end; "
        f"commit {res['code']['commit']}"
        + (" + changes" if res["code"]["quartchat_changes"] else "")
        + "\n"
    )
    for kind, r in res["databases"].items():
        if "data" in r:
            d, s = r["data"], r["size"]
            w(
                f"\n{kind}: {d['conversations_mine']:,} conversations / {d['messages_mine']:,} "
                f"messages for the admin, {d['messages']:,} messages in all ({d['others']} other "
                f"users); {d['chars_per_message']:.0f} characters per message; seeded in "
                f"{d['seconds']:.0f} s; messages with the middling word {d['middling_word']!r}: "
                f"~{d['word_messages_about'][d['middling_word']]:,}, the rare {d['rare_word']!r}: "
                f"~{d['word_messages_about'][d['rare_word']]:,}"
                " messages\n\n"
            )
            hdr: tuple[str, ...] = ("request", "items", "p50", "p99", "max", "n", "service CPU")
            rows: list[tuple[str, ...]] = [
                (
                    name,
                    str(v["items"]),
                    f"{v['p50_ms']:.1f} ms",
                    f"{v['p99_ms']:.1f} ms",
                    f"{v['max_ms']:.1f} ms",
                    str(v["n"]),
                    f"{v['cpu_ms']:.1f} ms",
                )
                for name, v in r["latency"].items()
            ]
            table(hdr, rows, w)
            per = s["per_1000_messages"]
            if kind == "sqlite":
                w(
                    f"\n  size: {mib(s['bytes'])} (file {mib(s['file_bytes'])}, WAL "
                    f"{mib(s['wal_bytes'])} after a checkpoint, free pages {mib(s['free_bytes'])})"
                    f" = {per / 1024:,.0f} KiB per 1,000 messages\n"
                )
            else:
                t = s["tables"]
                w(
                    f"\n  size: messages {mib(t['messages']['total'])} (heap "
                    f"{mib(t['messages']['heap'])}, indexes {mib(t['messages']['indexes'])} of which"
                    f" the search index {mib(s['search_index_bytes'])}), conversations "
                    f"{mib(t['conversations']['total'])} = {per / 1024:,.0f} KiB per 1,000 "
                    f"messages (the whole database: {mib(s['database_bytes'])})\n"
                )
        if "cpu" in r:
            c = r["cpu"]
            w(
                f"\n{kind}: CPU per relayed chunk, {a['streams']} concurrent streams of "
                f"{a['chunks']} chunks, {len(c['pairs'])} pairs of phases (order alternating)\n\n"
            )
            hdr = ("pair", "stateless", "history", "history / stateless", "errors", "other work")
            rows = []
            for i, p in enumerate(c["pairs"]):
                rows.append((
                    str(i + 1),
                    f"{p['stateless']['us_per_chunk']:.1f} us",
                    f"{p['history']['us_per_chunk']:.1f} us",
                    f"{p['ratio']:.3f}",
                    str(p["stateless"]["errors"] + p["history"]["errors"]),
                    f"{100 * p['stateless']['other_busy']:.0f} / {100 * p['history']['other_busy']:.0f} %",
                ))  # fmt: skip
            table(hdr, rows, w)
            w(
                f"\n  medians: stateless {c['stateless_us_per_chunk']:.1f} us, history "
                f"{c['history_us_per_chunk']:.1f} us per chunk; replies saved: "
                + ", ".join(f"{k} {v}" for k, v in sorted(c["saved"].items()))
                + f" (of {c['turns_sent']} turns)\n"
                "  other work = the rest of the service core's busy time (other processes)\n"
            )
    w("\ntargets (printed, not enforced):\n")
    for name, (ok, detail) in res["targets"].items():
        w(f"  [{'ok' if ok else 'MISS'}] {name}: {detail}\n")
    w("\n")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="quartchat conversations benchmark (see the docstring)")
    add = p.add_argument
    add("--databases", default="sqlite,postgresql", help="sqlite and/or postgresql")
    add("--cpu-databases", default="sqlite", help="where to measure CPU per chunk ('' to skip)")
    add("--conversations", type=int, default=10_000, help="the admin's (0: no data, no latency)")
    add("--messages", type=int, default=20, help="messages per conversation")
    add("--others", type=int, default=2, help="other users with data")
    add("--other-conversations", type=int, default=1_000, help="conversations of each other user")
    add("--rounds", type=int, default=200, help="requests of each kind for the latency")
    add("--latency-seconds", type=float, default=120, help="at most, per database")
    add("--seed", type=int, default=10, help="of the text generator")
    add("--streams", type=int, default=200, help="concurrent streams for the CPU phases")
    add("--chunks", type=int, default=200, help="content chunks per upstream stream")
    add("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    add("--repeat", type=int, default=3, help="pairs of CPU phases (0: skip)")
    add("--service-cpu", type=int, default=0, help="core the service is pinned to")
    add("--harness-cpu", type=int, default=1, help="core of this script and the upstream")
    add("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    add("--log-level", default="WARNING", help="the service's LOG_LEVEL (its log goes to a file)")
    add("--outdir", default=str(ROOT / "artifacts" / "bench"), help="logs go here")
    add("--json", nargs="?", const="-", default=None, metavar="PATH",
        help="also write the results as JSON, to PATH or to stdout")  # fmt: skip
    args = p.parse_args(argv)
    args.databases = [d for d in args.databases.split(",") if d]
    args.cpu_databases = [d for d in args.cpu_databases.split(",") if d]
    for d in [*args.databases, *args.cpu_databases]:
        if d not in DATABASES:
            p.error(f"unknown database {d!r}: sqlite or postgresql")
    args.databases = [d for d in DATABASES if d in {*args.databases, *args.cpu_databases}]
    # What relay_bench's phases read.
    args.timeout_factor, args.probes, args.probe_delay, args.probe_gap = 3.0, 0, 0.0, 0.0
    return args


async def run(
    args: argparse.Namespace, upstream: Child, uport: int, logdir: Path, data: Path
) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop between awaits, then clean up
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    results: dict[str, Any] = {}
    postgres: Postgres | None = None
    try:
        for kind in args.databases:
            data_dir = data / kind
            if kind == "sqlite":
                url = make_url(f"sqlite+aiosqlite:///{data_dir / 'quartchat.db'}")
            else:
                postgres = postgres or Postgres()
                url = await postgres.database("quartchat_bench")
            results[kind] = await one_database(args, kind, url, data_dir, uport, upstream, logdir)
    finally:
        if postgres is not None:
            postgres.stop()
    return {"databases": results}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        say("warning: one core only; the service and the harness share it")
        args.service_cpu = args.harness_cpu = 0
    raise_fd_limit(4 * args.streams + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="conversations-logs-", dir=outdir))
    data = Path(tempfile.mkdtemp(prefix="conversations-bench-data-"))
    args.admin_password = "bench-" + uuid.uuid4().hex

    stop_children_on_exit()
    load0 = os.getloadavg()[0]
    uport = free_port()
    try:
        command = upstream_argv("bench", uport, args.chunks, args.interval)
        upstream = spawn("upstream", command, args.harness_cpu, child_env(), logdir)
        wait_for_port(upstream, uport)
        res = on_uvloop(run(args, upstream, uport, logdir, data))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        return 130
    finally:
        stop_children()
        shutil.rmtree(data, ignore_errors=True)
    res["loadavg"] = [load0, os.getloadavg()[0]]
    res["code"] = code_version()
    res["config"] = {k: v for k, v in vars(args).items() if k != "admin_password"}
    res["machine"] = machine()
    res["targets"] = check_targets(res)
    print_report(res)
    if args.json:
        write_json(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
