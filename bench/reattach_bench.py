#!/usr/bin/env python
"""How long a reader takes to reattach to a running reply: from its `GET …/events` to the last
replayed event, with `--events` events already in the run's log.

    .venv/bin/python bench/reattach_bench.py                      # about 30 s
    .venv/bin/python bench/reattach_bench.py --events 1000 --readers 200

The service (`python -m quartchat`, accounts on SQLite in a temporary DATA_DIR) runs a reply
from tests/fake_upstream.py: `--events` chunks, one per upstream read, then the upstream hangs,
so the run stays live and every reader follows it after its replay. Then `--readers` readers one
after another attach from the start (`?after=0`) over a kept-alive connection: the time from
sending the request to receiving the event whose id is the reply's whole length; the reader then
hangs up. With `--redis-url` (or `--redis`: a throwaway redis-server, as tests/redis_server.py
starts it) the service gets REDIS_URL too, and the readers attach through a second service on
the same database (SQLite: the first's DATA_DIR; or `--database-url`), so that the replay comes
from Redis, not from the memory of the process that runs the reply.

A script, not a test: it prints p50 / p99 / max against the targets (in-process <= 20 ms p99,
through Redis <= 50 ms p99) and enforces none.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fake_upstream import FakeUpstream, Reply, completion_chunks  # noqa: E402
from tests.redis_server import RedisServer, redis_server_bin  # noqa: E402
from tests.service import Service  # noqa: E402

ADMIN = {"email": "bench@example.com", "password": "a bench password 1234"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="reattach to a running reply (see the docstring)")
    p.add_argument("--events", type=int, default=1000, help="events in the log before readers")
    p.add_argument("--readers", type=int, default=200, help="readers, one after another")
    p.add_argument("--redis-url", default="", help="REDIS_URL for the service (and a reader's)")
    p.add_argument("--redis", action="store_true", help="start a throwaway redis-server for it")
    p.add_argument("--database-url", default="", help="DATABASE_URL shared by two services")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    words = [f"w{i} " for i in range(args.events)]
    text = "".join(words)
    redis = None
    if args.redis:
        binary = redis_server_bin()
        if binary is None:
            raise SystemExit("no redis-server here (apt-get install redis-server)")
        redis = RedisServer(binary).start()
        args.redis_url = redis.url
    fake = FakeUpstream().start()
    fake.reply_with(Reply(chunks=completion_chunks(words)[:-3], delay=0.002, hang=True))
    env = {"AUTH_MODE": "accounts", "ADMIN_EMAIL": ADMIN["email"],
           "ADMIN_PASSWORD": ADMIN["password"], "LOG_LEVEL": "WARNING"}  # fmt: skip
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    try:
        with Service(fake.url, **env) as service:
            # On SQLite the second service shares the first's DATA_DIR (and so its database).
            shared = {} if args.database_url else {"DATA_DIR": str(service.data_dir)}
            two = args.redis_url or args.database_url
            reader_service = Service(fake.url, **env, **shared).start() if two else service
            try:
                return measure(args, service, reader_service, text)
            finally:
                if reader_service is not service:
                    reader_service.stop()
    finally:
        fake.stop()
        if redis is not None:
            redis.remove()


def measure(args: argparse.Namespace, service: Service, reader: Service, text: str) -> int:
    last_id = f"id: {len(text)}\n".encode()
    with httpx.Client(base_url=service.url, timeout=60) as writer:
        assert writer.post("/api/auth/login", json=ADMIN).status_code == 200
        made = writer.post("/api/conversations", json={}).json()
        body = {"content": "go", "client_id": "c-1"}
        with writer.stream("POST", f"/api/conversations/{made['id']}/messages", json=body) as r:
            reply_id = r.headers["Quartchat-Reply-Id"]
            seen = b""
            for piece in r.iter_raw():
                seen = (seen + piece)[-200:]
                if last_id in seen:
                    break
        cookies = dict(writer.cookies)
    path = f"/api/conversations/{made['id']}/messages/{reply_id}/events"
    took: list[float] = []
    events = 0
    with httpx.Client(base_url=reader.url, cookies=cookies, timeout=60) as client:
        for _ in range(args.readers):
            started = time.perf_counter()
            with client.stream("GET", path, params={"after": "0"}) as r:
                raw = b""
                for piece in r.iter_raw():
                    raw += piece
                    if raw.endswith(b"\n\n") and last_id in raw[-400:]:
                        break
            took.append((time.perf_counter() - started) * 1000)
            events = raw.count(b"\nevent: chunk")
    slowest = sorted(range(len(took)), key=took.__getitem__)[-3:][::-1]
    took.sort()
    p50, p99 = statistics.median(took), took[min(len(took) - 1, int(len(took) * 0.99))]
    where = "in-process"
    if reader is not service:
        where = "through Redis" if args.redis_url else "from the database, on another process"
    target = 20 if where == "in-process" else 50
    print(f"reattach_bench: {events} events replayed per reader, {args.readers} readers, {where}")
    print(
        f"  request to last replayed event: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {took[-1]:.1f} ms"
    )
    print("  slowest: " + ", ".join(f"reader {i + 1} of {args.readers}" for i in slowest))
    verdict = "OK" if p99 <= target else "MISS"
    print(f"  [{verdict}] target p99 <= {target} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
