#!/usr/bin/env python
"""What a reply read on another process costs with Redis (runs, issue 17).

    .venv/bin/python bench/runs_bench.py --baseline-ratio 1.09      # about 4 minutes

conversations_bench's CPU phases (its pieces, and relay_bench's: the fake upstream and this
script pinned to the harness core, CPU time from /proc), with a throwaway redis-server (as
tests/redis_server.py starts it) and two services on one database (`AUTH_MODE=accounts`,
`REDIS_URL`; on SQLite they share the DATA_DIR, with `--database postgresql` a throwaway
cluster): the writer `A` pinned to `--service-cpu`, the reader `B` on `--reader-cpu` (unpinned
by default) and redis-server unpinned. Each of `--repeat` rounds runs four phases of
`--streams` concurrent streams, in an order that rotates from round to round:

- `stateless`: `POST /api/chat/stream` on A;
- `history`: a turn on A (`POST /api/conversations/{id}/messages`), its reply mirrored to Redis,
  read by the request that sent it only;
- `reader`: the same, and as soon as its response head names the reply, one more reader on B
  (`GET …/messages/{reply}/events?after=0`, replayed from Redis and followed to the end);
- `elsewhere`: the sender hangs up as soon as it has the reply's id, and the reader on B is the
  reply's only one (a page reloaded onto another worker): the issue's "one reader on another
  process".

CPU per relayed chunk is a process's CPU time over the chunks of the replies (each counted once:
as the sender received them, or in `elsewhere` as B's reader did); `reader` and `elsewhere`
count A's and B's (redis-server's apart), and their ratio to `stateless` is set against the
baseline's history / stateless from conversations_bench (`--baseline-ratio`; the target, for
`elsewhere`: at most 1.5 x it). Every reader's stream is judged as the
sender's (all the chunks, then `done` with the whole text), and every reply must be saved
complete. Prints, enforces nothing; logs go to artifacts/bench/runs-logs-*/.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop
from accounts_bench import ADMIN_EMAIL, FIRST_CHUNK, Service, code_version, service_env, sign_in
from conversations_bench import Postgres, TurnBench, make_conversations, saved_replies
from relay_bench import (
    CHILDREN,
    HOST,
    ROOT,
    WORD,
    Child,
    Response,
    StreamPhase,
    Target,
    Verdict,
    child_env,
    free_port,
    http_post,
    judge_service_stream,
    machine,
    raise_fd_limit,
    ratio,
    say,
    service_argv,
    spawn,
    stop_children,
    table,
    upstream_argv,
    wait_for_port,
    write_json,
)
from sqlalchemy.engine import URL, make_url

TARGET_READER_RATIO = 1.5  # x the baseline's history / stateless
PHASES = ("stateless", "history", "reader", "elsewhere")
# `--profile DIR`: each service runs under cProfile and leaves DIR/<name>.prof when it exits.
PROFILE_PRELUDE = """
import atexit, cProfile
_profile = cProfile.Profile()
_profile.enable()
atexit.register(lambda: (_profile.disable(), _profile.dump_stats({path!r})))
"""


class HeadResponse(Response):
    """A Response that also says when its head has arrived (the reply's id is in it)."""

    def reset(self) -> None:
        super().reset()
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _parse_head(self) -> bool:
        parsed = super()._parse_head()
        if parsed and not self.head.done():
            self.head.set_result(None)
        return parsed

    def header(self, name: bytes) -> str | None:
        head = b"".join(self.parts)[: self.head_len].lower()
        start = head.find(b"\r\n" + name.lower() + b":")
        if start < 0:
            return None
        return head[start:].split(b"\r\n", 2)[1].partition(b":")[2].strip().decode()


class ReaderBench(TurnBench):
    """TurnBench where the `reader` target's turns get a second reader on another service, and
    every process's CPU is taken around each phase."""

    def __init__(
        self,
        *args: Any,
        turns: Callable[[], tuple[str, bytes]],
        reader: Service,
        judge: Callable[[int, bytes], Verdict],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, makers={"history": lambda: turns()[1]}, **kwargs)
        self.turns = turns
        self.reader = reader
        self.judge = judge
        self.cpu: dict[str, float] = {}
        self.reader_errors: dict[str, int] = {}
        self.followers: list[Response] = []
        self.few_events = 0
        self.events_range: tuple[int, ...] = ()

    async def stream_phase(self, target: Target, n: int) -> StreamPhase:
        self.followers = []
        before = [c.cpu_seconds() for c in self.services]
        phase = await super().stream_phase(target, n)
        self.cpu = {c.name: c.cpu_seconds() - b for c, b in zip(self.services, before, strict=True)}
        # The clock has stopped: judge B's readers. One that got a few big chunks instead of
        # about one event per upstream chunk followed the database's checkpoints, not Redis
        # (where A keeps pace: a saturated A merges chunks for every reader).
        self.reader_errors, self.few_events, events = {}, 0, []
        self.reader_samples: dict[str, bytes] = {}
        for follower in self.followers:
            verdict = self.judge(follower.status, follower.body())
            events.append(verdict.events)
            self.few_events += verdict.events < self.args.chunks / 4
            if target.name == "reader" and (verdict.error or follower.cut):
                kind = f"reader: {verdict.error or 'cut'}"
                self.reader_errors[kind] = self.reader_errors.get(kind, 0) + 1
                self.reader_samples.setdefault(kind, follower.body()[-300:])
        events.sort()
        self.events_range = (events[0], events[len(events) // 2], events[-1]) if events else ()
        return phase

    async def one_stream(
        self, target: Target, phase: StreamPhase, deadline: float
    ) -> Response | None:
        if target.name not in ("reader", "elsewhere"):
            return await super().one_stream(target, phase, deadline)
        conversation_id, request = self.turns()
        sender, follower = HeadResponse(target.first_re), Response(target.first_re)
        self.followers.append(follower)
        transports = []
        try:
            transport, _ = await self.loop.create_connection(lambda: sender, HOST, target.port)
            transports.append(transport)
            transport.write(request)
            await asyncio.wait_for(
                asyncio.shield(sender.head), max(0.1, deadline - time.monotonic())
            )
            reply = sender.header(b"Quartchat-Reply-Id")
            if reply is None:  # a refusal: judged as the sender's
                await asyncio.wait_for(
                    asyncio.shield(sender.done), max(0.1, deadline - time.monotonic())
                )
                return sender
            if self.args.reader_delay:
                await asyncio.sleep(self.args.reader_delay)
            transport, _ = await self.loop.create_connection(
                lambda: follower, HOST, self.reader.port
            )
            transports.append(transport)
            if target.name == "elsewhere":  # the reader on B is the reply's only one
                transports.pop(0).close()
            transport.write(
                f"GET /api/conversations/{conversation_id}/messages/{reply}/events?after=0 "
                f"HTTP/1.1\r\nHost: {HOST}:{self.reader.port}\r\n"
                f"Authorization: Bearer {self.reader.token}\r\nConnection: close\r\n\r\n"
                .encode()
            )  # fmt: skip
            left = max(0.1, deadline - time.monotonic())
            if target.name == "elsewhere":
                await asyncio.wait_for(asyncio.shield(follower.done), left)
                if follower.cut:
                    phase.error("reader: cut")
                    return None
                return follower  # judged, and its chunks counted, as a sender's
            await asyncio.wait_for(asyncio.gather(sender.done, follower.done), left)
        except TimeoutError:
            phase.error("timeout")
            return None
        except OSError as exc:
            phase.error(f"connect: {type(exc).__name__}")
            return None
        finally:
            for transport in transports:
                transport.close()
        if sender.cut:
            phase.error("cut mid-stream")
            return None
        return sender


# -- main ------------------------------------------------------------------------------------


def start_redis(logdir: Path, data: Path) -> tuple[Child, str]:
    """redis-server as tests/redis_server.py starts it: nothing kept on disk."""
    port = free_port()
    work = data / "redis"
    work.mkdir()
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
            "no", "--dir", str(work)]  # fmt: skip
    child = spawn("redis", argv, None, child_env(), logdir)
    wait_for_port(child, port)
    return child, f"redis://{HOST}:{port}/0"


def start(
    args: argparse.Namespace, name: str, data_dir: Path, extra: dict[str, str], cpu: int
) -> Service:
    """A service on the bench's database (on SQLite: the DATA_DIR both share), signed in."""
    url: URL = args.url
    port = free_port()
    env = service_env(child_env(), args.uport, port, data_dir, args.log_level, True)
    env.update(ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=args.admin_password, **extra)
    if url.get_backend_name() == "postgresql":
        env["DATABASE_URL"] = url.render_as_string(hide_password=False)
    prelude = args.service_prelude
    if args.profile:
        prelude += PROFILE_PRELUDE.format(path=str(Path(args.profile).resolve() / f"{name}.prof"))
    child = spawn(name, service_argv(sys.executable, prelude, report=False),
                  cpu if cpu >= 0 else None, env, args.logdir)  # fmt: skip
    service = Service(name, child, port, data_dir, True)
    wait_for_port(child, port, timeout=60)
    sign_in(service, args.admin_password)
    return service


async def measure(
    args: argparse.Namespace, a: Service, b: Service, upstream: Child, redis: Child
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {a.token}"}
    expected = WORD * args.chunks

    def judge(status: int, body: bytes) -> Verdict:
        return judge_service_stream(status, body, expected)

    question = json.dumps({"messages": [{"role": "user", "content": "benchmark"}]}).encode()
    stateless = Target(
        "stateless",
        a.port,
        http_post("/api/chat/stream", a.port, question, close=True, headers=headers),
        b"",
        FIRST_CHUNK,
        judge,
        a.child,
    )
    targets = [stateless, *(dataclasses.replace(stateless, name=n) for n in PHASES[1:])]
    ids = make_conversations(a, args.streams)
    turn, slots = itertools.count(), itertools.cycle(ids)

    def next_turn() -> tuple[str, bytes]:
        n, conversation_id = next(turn), next(slots)
        body = json.dumps({"content": f"benchmark question {n}", "client_id": f"b{n}"}).encode()
        path = f"/api/conversations/{conversation_id}/messages"
        return conversation_id, http_post(path, a.port, body, close=True, headers=headers)

    bench = ReaderBench(
        args,
        [a.child, b.child, redis],
        upstream,
        {t.name: t for t in targets},
        turns=next_turn,
        reader=b,
        judge=judge,
    )
    for t in targets:  # warm-up: code paths, pools, every conversation's first turn (its title)
        phase = await bench.stream_phase(t, args.streams)
        if phase.errors or bench.reader_errors:
            raise SystemExit(
                f"warm-up of {t.name}: {phase.errors} {bench.reader_errors} {bench.reader_samples}"
            )
    rounds = []
    for i in range(args.repeat):
        one: dict[str, Any] = {}
        for t in targets[i % 4 :] + targets[: i % 4]:
            await asyncio.sleep(args.pause)
            s = (await bench.stream_phase(t, args.streams)).summary()
            s["us_per_chunk"] = {k: ratio(v, s["chunks"]) * 1e6 for k, v in bench.cpu.items()}
            s["reader_errors"], s["few_events"] = bench.reader_errors, bench.few_events
            for kind, sample in bench.reader_samples.items():
                say(f"  {kind}, e.g. {sample!r}")
            one[t.name] = s
            us = s["us_per_chunk"]
            say(
                f"  round {i + 1}, {t.name}: A {us['A']:.1f}, B {us['B']:.1f}, redis "
                f"{us['redis']:.1f} us/chunk; errors {s['errors']}, reader's {bench.reader_errors}, "
                f"B's readers with few events (from the database) {bench.few_events}"
                + (
                    " (events min / median / max {} / {} / {})".format(*bench.events_range)
                    if bench.events_range
                    else ""
                )
            )
        base = one["stateless"]["us_per_chunk"]["A"]
        one["history_ratio"] = ratio(one["history"]["us_per_chunk"]["A"], base)
        for name in ("reader", "elsewhere"):
            both = one[name]["us_per_chunk"]
            one[f"{name}_ratio"] = ratio(both["A"] + both["B"], base)
        rounds.append(one)
    saved = await saved_replies(args.url, ids, expected)
    return {"rounds": rounds, "saved": saved, "turns_sent": next(turn)}


def print_report(res: dict[str, Any], args: argparse.Namespace) -> None:
    w, m, rounds = sys.stdout.write, res["machine"], res["rounds"]
    w(
        f"\nruns_bench: {m['cpu_model']} x{m['nproc']}, Python {m['python']}; load average "
        f"{res['loadavg'][0]:.2f} at the start, {res['loadavg'][1]:.2f} at the end; commit "
        f"{res['code']['commit']}{' + changes' if res['code']['quartchat_changes'] else ''}; "
        f"{args.database}, {args.streams} concurrent streams of {args.chunks} chunks\n\n"
    )
    w("CPU per relayed chunk, us (A: the writer, B: the reader's service; redis: redis-server)\n\n")
    hdr = ("round", "stateless A", "history A", "reader A / B / redis", "elsewhere A / B / redis",
           "history /", "reader /", "elsewhere /", "errors")  # fmt: skip
    rows = []
    for i, r in enumerate(rounds):
        s, h, x, e = (r[k]["us_per_chunk"] for k in PHASES)
        errors = sum(r[k]["errors"] + sum(r[k]["reader_errors"].values()) for k in PHASES)
        rows.append((str(i + 1), f"{s['A']:.1f}", f"{h['A']:.1f}",
                     f"{x['A']:.1f} / {x['B']:.1f} / {x['redis']:.1f}",
                     f"{e['A']:.1f} / {e['B']:.1f} / {e['redis']:.1f}", f"{r['history_ratio']:.3f}",
                     f"{r['reader_ratio']:.3f}", f"{r['elsewhere_ratio']:.3f}", str(errors)))  # fmt: skip
    table(hdr, rows, w)
    med = {k: statistics.median(r[f"{k}_ratio"] for r in rounds) for k in PHASES[1:]}
    w(
        f"\n  medians over stateless: history {med['history']:.3f}, reader (A+B) "
        f"{med['reader']:.3f}, elsewhere (A+B) {med['elsewhere']:.3f}; replies saved: "
        + ", ".join(f"{k} {v}" for k, v in sorted(res["saved"].items()))
        + f" (of {res['turns_sent']} turns)\n"
        "  history: the sender reads, Redis mirrors; reader: the sender and one reader on B;\n"
        "  elsewhere: the sender hangs up once it has the reply's id, B's reader is the only one\n"
    )
    if args.baseline_ratio:
        b = args.baseline_ratio
        w(f"\nagainst the baseline's history / stateless {b:.3f} (printed, not enforced):\n")
        elsewhere = med["elsewhere"] / b
        verdict = "ok" if elsewhere <= TARGET_READER_RATIO else "MISS"
        w(f"  [{verdict}] one reader, on another process (A+B): {elsewhere:.3f} x, target <= "
          f"{TARGET_READER_RATIO}\n")  # fmt: skip
        w(f"  (history with the Redis mirror: {med['history'] / b:.3f} x; the sender and a reader"
          f" on B: {med['reader'] / b:.3f} x)\n")  # fmt: skip
    w("\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="runs with Redis, a reader on another process")
    add = p.add_argument
    add("--database", default="sqlite", choices=("sqlite", "postgresql"))
    add("--streams", type=int, default=200, help="concurrent streams per phase")
    add("--chunks", type=int, default=200, help="content chunks per upstream stream")
    add("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    add("--repeat", type=int, default=3, help="rounds of the three phases")
    add("--baseline-ratio", type=float, default=0.0,
        help="the baseline's history / stateless (conversations_bench), for the targets")  # fmt: skip
    add("--service-cpu", type=int, default=0, help="core of service A (the writer)")
    add("--reader-cpu", type=int, default=-1, help="core of service B (-1: unpinned)")
    add("--harness-cpu", type=int, default=1, help="core of this script and the upstream")
    add("--reader-delay", type=float, default=0.0,
        help="seconds from the sender's response head to B's reader (0: at once)")  # fmt: skip
    add("--service-prelude", default="", metavar="CODE",
        help="a what-if: Python run in both services before quartchat starts")  # fmt: skip
    add("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    add("--log-level", default="WARNING", help="the services' LOG_LEVEL")
    add("--outdir", default=str(ROOT / "artifacts" / "bench"), help="logs go here")
    add("--json", default=None, metavar="PATH", help="also write the results as JSON")
    add("--profile", default="", metavar="DIR",
        help="run the services under cProfile (slower: for where the time goes, not figures)")  # fmt: skip
    args = p.parse_args(argv)
    args.timeout_factor, args.probes, args.probe_delay, args.probe_gap = 3.0, 0, 0.0, 0.0
    return args


async def run(args: argparse.Namespace, upstream: Child, data: Path) -> dict[str, Any]:
    postgres = None
    try:
        if args.database == "sqlite":
            args.url = make_url(f"sqlite+aiosqlite:///{data / 'quartchat.db'}")
        else:
            postgres = Postgres()
            args.url = await postgres.database("quartchat_bench")
        redis, redis_url = start_redis(args.logdir, data)
        a = start(args, "A", data, {"REDIS_URL": redis_url}, args.service_cpu)
        b = start(args, "B", data, {"REDIS_URL": redis_url}, args.reader_cpu)
        return await measure(args, a, b, upstream, redis)
    finally:
        stop_children_but(upstream)
        if postgres is not None:
            postgres.stop()


def stop_children_but(keep: Child) -> None:
    """The services, then redis-server (before the PostgreSQL cluster they use goes)."""
    for child in [c for c in reversed(CHILDREN) if c is not keep]:
        child.stop()
        CHILDREN.remove(child)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(6 * args.streams + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    Path(args.outdir).mkdir(parents=True, exist_ok=True)
    args.logdir = Path(tempfile.mkdtemp(prefix="runs-logs-", dir=args.outdir))
    data = Path(tempfile.mkdtemp(prefix="runs-bench-data-"))
    args.admin_password = "bench-" + uuid.uuid4().hex
    atexit.register(stop_children)
    load0 = os.getloadavg()[0]
    args.uport = free_port()
    try:
        argv_ = upstream_argv("bench", args.uport, args.chunks, args.interval)
        upstream = spawn("upstream", argv_, args.harness_cpu, child_env(), args.logdir)
        wait_for_port(upstream, args.uport)
        res = uvloop.run(run(args, upstream, data))
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        stop_children()
        shutil.rmtree(data, ignore_errors=True)
    res.update(loadavg=[load0, os.getloadavg()[0]], code=code_version(), machine=machine())
    print_report(res, args)
    if args.json:
        config = {k: str(v) for k, v in vars(args).items() if k != "admin_password"}
        write_json({**res, "config": config}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
