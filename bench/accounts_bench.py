#!/usr/bin/env python
"""Load benchmark of accounts: what checking a credential costs a request, and whether logins
stall the relay's streams.

    .venv/bin/python bench/accounts_bench.py                    # about 3.5 minutes
    .venv/bin/python bench/accounts_bench.py --repeat 5 --json artifacts/bench/accounts.json

The processes and the pieces of bench/relay_bench.py, imported from it: the fake upstream and
this script's load generator (raw asyncio protocols under uvloop) pinned to the harness core, the
services (`python -m quartchat`) pinned to core 0, CPU time from /proc. Side by side, on one
upstream, each with a temporary DATA_DIR of its own:

* on: `AUTH_MODE=accounts` on its SQLite database (the default), the first admin made at start
  from ADMIN_EMAIL/ADMIN_PASSWORD; the script logs in through `POST /api/auth/login` (a session
  cookie) and makes an API token through `POST /api/auth/tokens`;
* off: `AUTH_MODE=none`;
* uncached (unless `--no-uncached`): "on" with the principal cache turned off before it starts
  (quartchat.auth.principal.CACHE_SECONDS = 0), so that every request pays its lookup: the worst
  case of "at most one indexed lookup per request".

1. Non-streamed requests/s: `POST /api/chat` over `--whole-concurrency` keep-alive connections
   for `--whole-seconds`, once per variant (off; on with the Bearer token; on with the cookie;
   uncached with each), in an order that reverses from run to run, `--repeat` runs. Reports
   req/s, service CPU per request and each variant's req/s over off's in the same run (target:
   accounts on within 10 % of off).

2. Logins during streams: `--streams` streams through `POST /api/chat/stream` with the token,
   their starts spread over `--stagger` seconds and each reopened when it ends, so that about that
   many are always running and none arrive in a burst. Then `--rounds` rounds of a burst of
   `--logins` correct logins fired at once and a quiet window as long as that burst, without
   logins (which comes first alternates). In both, single probe streams are opened one after the
   other, `--probe-gap` apart, each closed at its first chunk. Reports the probes' time to first
   chunk (added p99 = burst minus quiet; target: under 10 ms), the gaps between the chunks of the
   running streams that arrived in each kind of window (nominally the upstream's interval), how
   long each login took, and the service's CPU per login (a burst's CPU minus its quiet window's).

A script, not a test: it prints the figures next to the targets, and exits 0 unless the harness
itself failed. Logs go to artifacts/bench/accounts-logs-*/.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay_bench import (
    HOST,
    ROOT,
    WORD,
    Bench,
    Child,
    Response,
    Target,
    child_env,
    core_busy,
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

from quartchat.auth.cookies import COOKIE_NAME
from quartchat.auth.passwords import HASHER
from quartchat.config import Settings

TARGET_RPS_RATIO = 0.90  # accounts on: at least this x the requests/s of accounts off
TARGET_ADDED_TTFC_P99_MS = 10.0  # during a burst of logins, over the quiet windows'
ADMIN_EMAIL = "bench@example.com"
# Run in the "uncached" service before quartchat starts: a principal expires as it is cached.
UNCACHED_PRELUDE = (
    "import quartchat.auth.principal as p\n"
    "assert isinstance(p.CACHE_SECONDS, float), 'quartchat.auth.principal.CACHE_SECONDS moved'\n"
    "p.CACHE_SECONDS = 0.0"
)
# `--hash-nice N`, a what-if for the "on" service: each password check sets its thread's nice
# value (Linux: per thread) to N before hashing. quartchat hashes at 19 (quartchat/auth/
# passwords.py); `--hash-nice 0` measures hashing at the event loop's priority, as it once did.
HASH_NICE_PRELUDE = """
import os, threading, quartchat.auth.passwords as passwords
def _niced(check):
    def run(*args):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), {nice})
        return check(*args)
    return run
passwords._verify = _niced(passwords._verify)
"""
FIRST_CHUNK = re.compile(rb"event: chunk\n")


# --------------------------------------------------------------------------------------------
# The services and their credentials
# --------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    child: Child
    port: int
    data_dir: Path
    accounts: bool
    cookie: str = ""  # "quartchat_session=…"
    token: str = ""  # "qc_…"


def service_env(
    base: dict[str, str], uport: int, port: int, data_dir: Path, log_level: str, accounts: bool
) -> dict[str, str]:
    """The service's environment: none of quartchat's settings from ours, then these."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in base.items() if k.upper() not in fields}
    env.update(
        OPENAI_API_BASE=f"http://{HOST}:{uport}/v1",
        APP_HOST=HOST,
        APP_PORT=str(port),
        LOG_LEVEL=log_level,
        DATA_DIR=str(data_dir),
        DATABASE_URL="",  # blank is unset, even if a .env file names a server: SQLite
        AUTH_MODE="accounts" if accounts else "none",
        # A burst fires --logins logins for one account from one address at once; login limits
        # count attempts in flight, so the default (10) would refuse part of the burst.
        LOGIN_ATTEMPTS_PER_MINUTE="100000",
        # One user holds hundreds of streams here: the per-user limit (4 by default) is off.
        MAX_STREAMS_PER_USER="0",
    )
    return env


def call(
    port: int, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        body = None if payload is None else json.dumps(payload).encode()
        sent = {**(headers or {}), **({"Content-Type": "application/json"} if body else {})}
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def sign_in(service: Service, password: str) -> None:
    """Log in as the admin (a session cookie), make an API token, and check that the service
    takes each for what it is."""
    login = {"email": ADMIN_EMAIL, "password": password}
    status, headers, body = call(service.port, "POST", "/api/auth/login", login)
    cookies = [c.split(";", 1)[0] for c in headers.get_all("Set-Cookie") or ()]
    cookie = next((c for c in cookies if c.startswith(COOKIE_NAME + "=")), None)
    if status != 200 or cookie is None:
        raise SystemExit(f"{service.name}: login answered {status} {body[:300]!r}")
    status, _, body = call(
        service.port, "POST", "/api/auth/tokens", {"name": "accounts-bench"}, {"Cookie": cookie}
    )
    if status != 201:
        raise SystemExit(f"{service.name}: making a token answered {status} {body[:300]!r}")
    token = str(json.loads(body)["token"])
    checks = {"token": {"Authorization": f"Bearer {token}"}, "session": {"Cookie": cookie}}
    for via, headers_ in checks.items():
        status, _, body = call(service.port, "GET", "/api/auth/me", headers=headers_)
        if status != 200 or json.loads(body).get("via") != via:
            raise SystemExit(f"{service.name}: /api/auth/me by {via}: {status} {body[:300]!r}")
    service.cookie, service.token = cookie, token


def credential(service: Service, kind: str) -> dict[str, str]:
    if kind == "token":
        return {"Authorization": f"Bearer {service.token}"}
    if kind == "cookie":
        return {"Cookie": service.cookie}
    return {}


def target(service: Service, kind: str, label: str, chunks: int) -> Target:
    """Streamed and non-streamed `POST /api/chat` to `service` with credential `kind`."""
    body = json.dumps({"messages": [{"role": "user", "content": "benchmark"}]}).encode()
    headers = credential(service, kind)
    expected = WORD * chunks
    return Target(
        label,
        service.port,
        http_post("/api/chat/stream", service.port, body, close=True, headers=headers),
        http_post("/api/chat", service.port, body, close=False, headers=headers),
        FIRST_CHUNK,
        lambda status, b: judge_service_stream(status, b, expected),
        service.child,
    )


def verify_ms(samples: int = 5) -> float:
    """How long one argon2id verify with quartchat's parameters takes in this process (median)."""
    stored = HASHER.hash("a password to verify")
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        HASHER.verify(stored, "a password to verify")
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def code_version() -> dict[str, Any]:
    """The commit the checkout is at, and which of quartchat/'s files differ from it: what ran."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "?"

    changed = git("status", "--porcelain", "--untracked-files=all", "--", "quartchat")
    return {
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "quartchat_changes": [line[3:] for line in changed.splitlines()] if changed != "?" else [],
    }


def database_report(data_dir: Path) -> dict[str, Any]:
    """The service's SQLite files on disk, the filesystem they are on, and what they hold."""
    db = data_dir / "quartchat.db"
    files = {p.name: p.stat().st_size for p in sorted(data_dir.glob("quartchat.db*"))}
    mount, fstype, device = "/", "?", "?"
    with open("/proc/mounts") as f:
        for line in f:
            dev, point, kind = line.split()[:3]
            if str(db).startswith(point.rstrip("/") + "/") and len(point) >= len(mount):
                mount, fstype, device = point, kind, dev
    out: dict[str, Any] = {"path": str(db), "files": files, "fstype": fstype, "device": device}
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            out["journal_mode"] = connection.execute("PRAGMA journal_mode").fetchone()[0]
            for table_name in ("users", "sessions", "api_tokens"):
                query = f"SELECT count(*) FROM {table_name}"
                out[table_name] = connection.execute(query).fetchone()[0]
    return out


# --------------------------------------------------------------------------------------------
# 1. Non-streamed requests/s with accounts on and off
# --------------------------------------------------------------------------------------------


def busy(bench: Bench) -> float:
    """CPU seconds of the services (all of them are on one core)."""
    return sum(c.cpu_seconds() for c in bench.services)


async def whole_runs(
    args: argparse.Namespace, bench: Bench, variants: dict[str, Target]
) -> dict[str, Any]:
    names = list(variants)
    for name in names:  # imports, pools, code paths; and a wrong credential fails here
        warm = await bench.whole_phase(variants[name], args.whole_concurrency, 1.0)
        if warm["errors"] or not warm["requests"]:
            raise SystemExit(f"warm-up of {name} failed: {warm['error_kinds']}")
    runs: list[dict[str, dict[str, Any]]] = []
    for i in range(args.repeat):
        run: dict[str, dict[str, Any]] = {}
        # Who goes first reverses from run to run, so no variant is always measured after
        # another's leftovers, or always later on a machine whose speed drifts.
        for name in names if i % 2 == 0 else names[::-1]:
            await asyncio.sleep(args.pause)
            t = variants[name]
            t0, core0, mine0 = time.perf_counter(), core_busy(args.service_cpu)[0], busy(bench)
            run[name] = await bench.whole_phase(t, args.whole_concurrency, args.whole_seconds)
            r = run[name]
            # How busy other work kept the services' core around the phase (settling and
            # warm-up included): a noisy machine shows here.
            other = core_busy(args.service_cpu)[0] - core0 - (busy(bench) - mine0)
            r["core_other_busy"] = max(0.0, other) / (time.perf_counter() - t0)
            say(
                f"  run {i + 1}, {name}: {r['rps']:.0f} req/s, {r['service_cpu_us_per_request']:.0f}"
                f" us CPU/request, p99 {r['latency_ms_p99']:.1f} ms, errors {r['errors']}"
            )
        for name in names:
            run[name]["vs_off"] = ratio(run[name]["rps"], run["off"]["rps"])
            run[name]["cpu_vs_off"] = ratio(
                run[name]["service_cpu_us_per_request"], run["off"]["service_cpu_us_per_request"]
            )
        runs.append(run)
    summary = {}
    for name in names:
        rs = [run[name] for run in runs]
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "rps_runs": [r["rps"] for r in rs],
            "vs_off": statistics.median(r["vs_off"] for r in rs),
            "vs_off_runs": [r["vs_off"] for r in rs],
            "cpu_us_per_request": statistics.median(r["service_cpu_us_per_request"] for r in rs),
            "cpu_vs_off": statistics.median(r["cpu_vs_off"] for r in rs),
            "latency_ms_p99": statistics.median(r["latency_ms_p99"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "error_kinds": dict(sum((Counter(r["error_kinds"]) for r in rs), Counter())),
        }
    return {"runs": runs, "summary": summary}


# --------------------------------------------------------------------------------------------
# 2. A burst of logins while streams run
# --------------------------------------------------------------------------------------------


class Running(Response):
    """A stream kept running: the time of every read from its first chunk up to the one with
    its `done` event (not that one: the gap before it spans the upstream's chunks without text)."""

    def reset(self) -> None:
        super().reset()
        self.arrivals: list[float] = []
        self.finished = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.t_first and not self.finished:
            if b"event: done" in data:
                self.finished = True
            else:
                self.arrivals.append(time.perf_counter())


class FirstChunk(Response):
    """A probe: done at its first chunk."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.t_first and not self.done.done():
            self.done.set_result(None)


@dataclass
class Window:
    kind: str  # "burst" (logins going on) or "quiet"
    start: float
    end: float
    cpu_s: float  # the service's CPU time in the window
    other_s: float  # the rest of the busy time of the service's core: other work on the machine
    probes_ms: list[float] = field(default_factory=list)  # time to first chunk
    logins_ms: list[float] = field(default_factory=list)
    running: int = 0  # streams running at its start

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Logins:
    def __init__(self, args: argparse.Namespace, service: Service, stream: Target) -> None:
        self.args = args
        self.service = service
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.timeout = args.chunks * args.interval * 3 + 10
        body = json.dumps({"email": ADMIN_EMAIL, "password": args.admin_password}).encode()
        self.login_request = http_post("/api/auth/login", service.port, body, close=True)
        self.streams: list[Running] = []  # the finished ones
        self.current: dict[int, Running] = {}  # each slot's stream under way
        self.errors: Counter[str] = Counter()  # of the running streams, the probes and logins
        self.stop = asyncio.Event()

    async def _exchange(self, proto: Response, request: bytes) -> str | None:
        """Send `request` on a new connection; wait for `proto.done`; an error's kind, or None."""
        transport = None
        try:
            transport, _ = await self.loop.create_connection(lambda: proto, HOST, self.service.port)
            transport.write(request)
            await asyncio.wait_for(asyncio.shield(proto.done), self.timeout)
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return f"connect: {type(exc).__name__}"
        finally:
            if transport is not None:
                transport.close()
        if proto.cut and not proto.t_first:
            return "cut" if proto.status else "closed before response"
        return None

    async def keep_streaming(self, slot: int, delay: float) -> None:
        """One slot: after `delay`, a stream, and a new one each time it ends, until `stop`."""
        await asyncio.sleep(delay)
        while not self.stop.is_set():
            proto = self.current[slot] = Running(FIRST_CHUNK)
            error = await self._exchange(proto, self.stream.stream_request)
            if error:
                self.errors[f"stream: {error}"] += 1
                await asyncio.sleep(0.1)
                continue
            self.streams.append(proto)  # judged when the clock has stopped

    async def probe(self) -> float | None:
        proto = FirstChunk(FIRST_CHUNK)
        error = await self._exchange(proto, self.stream.stream_request)
        if error is None and proto.status != 200:
            error = f"HTTP {proto.status}"
        if error is None and not proto.t_first:
            error = "no first chunk"
        if error:
            self.errors[f"probe: {error}"] += 1
            return None
        return (proto.t_first - proto.t0) * 1000

    async def probes_until(self, over: Callable[[], bool]) -> list[float]:
        """Single streams opened `--probe-gap` apart until `over()`: their times to first chunk."""
        tasks = []
        while True:
            tasks.append(asyncio.create_task(self.probe()))
            await asyncio.sleep(self.args.probe_gap)
            if over():
                break
        return [t for t in await asyncio.gather(*tasks) if t is not None]

    async def login(self) -> float | None:
        proto = Response()
        error = await self._exchange(proto, self.login_request)
        if error is None and proto.status != 200:
            error = f"HTTP {proto.status} {proto.body()[:200]!r}"
        if error:
            self.errors[f"login: {error}"] += 1
            return None
        return (proto.t_end - proto.t0) * 1000

    def running(self) -> int:
        """Streams that have had their first chunk and not their end."""
        return sum(1 for s in self.current.values() if s.t_first and not s.t_end)

    def _cpu(self) -> tuple[float, float]:
        """The service's CPU time, and its core's busy time (whoever for)."""
        return self.service.child.cpu_seconds(), core_busy(self.args.service_cpu)[0]

    def _window(self, kind: str, t0: float, cpu0: tuple[float, float]) -> Window:
        t1 = time.perf_counter()
        mine, core = (b - a for a, b in zip(cpu0, self._cpu(), strict=True))
        return Window(kind, t0, t1, mine, max(0.0, core - mine))

    async def burst(self) -> Window:
        cpu0 = self._cpu()
        t0 = time.perf_counter()
        logins = [asyncio.create_task(self.login()) for _ in range(self.args.logins)]
        probing = asyncio.create_task(self.probes_until(lambda: all(t.done() for t in logins)))
        took = await asyncio.gather(*logins)
        window = self._window("burst", t0, cpu0)
        window.logins_ms = [t for t in took if t is not None]
        window.probes_ms = await probing
        return window

    async def quiet(self, seconds: float) -> Window:
        cpu0 = self._cpu()
        t0 = time.perf_counter()
        probing = asyncio.create_task(
            self.probes_until(lambda: time.perf_counter() >= t0 + seconds)
        )
        await asyncio.sleep(max(0.0, t0 + seconds - time.perf_counter()))
        window = self._window("quiet", t0, cpu0)
        window.probes_ms = await probing
        return window

    async def run(self) -> dict[str, Any]:
        a = self.args
        say(f"  logins: starting {a.streams} streams over {a.stagger:g} s ...")
        keepers = [
            asyncio.create_task(self.keep_streaming(i, i * a.stagger / a.streams))
            for i in range(a.streams)
        ]
        await asyncio.sleep(a.stagger + 1.0)
        warm = await self.burst()  # the first logins pay for code paths and the hasher's memory
        say(f"  logins: warm-up burst of {a.logins} took {warm.seconds * 1000:.0f} ms")
        last = warm.seconds
        windows: list[Window] = []
        for r in range(a.rounds):
            for kind in ("burst", "quiet") if r % 2 == 0 else ("quiet", "burst"):
                await asyncio.sleep(a.window_pause)
                running = self.running()
                w = await self.burst() if kind == "burst" else await self.quiet(last)
                w.running = running
                if kind == "burst":
                    last = w.seconds
                windows.append(w)
            b, q = sorted(windows[-2:], key=lambda w: w.kind)
            say(
                f"  logins: round {r + 1}: {b.running} streams running; burst {b.seconds * 1000:.0f}"
                f" ms, probe TTFC p99 {pct(b.probes_ms, 99):.1f} ms in it, "
                f"{pct(q.probes_ms, 99):.1f} ms quiet; other work on the service's core "
                f"{100 * (b.other_s + q.other_s) / (b.seconds + q.seconds):.0f}%"
            )
        self.stop.set()
        await asyncio.gather(*keepers)
        return self.report(windows, warm)

    def report(self, windows: list[Window], warm: Window) -> dict[str, Any]:
        a = self.args
        for s in self.streams:
            verdict = self.stream.judge(s.status, s.body())
            if verdict.error:
                self.errors[f"stream: {verdict.error}"] += 1
        gaps: dict[str, list[float]] = {"burst": [], "quiet": []}
        starts = [w.start for w in windows]
        for s in self.streams:
            t = s.arrivals
            for prev, cur in itertools.pairwise(t):
                i = bisect.bisect_right(starts, cur) - 1
                if i >= 0 and cur <= windows[i].end:
                    gaps[windows[i].kind].append((cur - prev) * 1000)
        out: dict[str, Any] = {}
        for kind in ("quiet", "burst"):
            ws = [w for w in windows if w.kind == kind]
            probes = [p for w in ws for p in w.probes_ms]
            seconds = sum(w.seconds for w in ws)
            out[kind] = {
                "windows": len(ws),
                "seconds": seconds,
                "probes": len(probes),
                "ttfc_ms_p50": pct(probes, 50),
                "ttfc_ms_p99": pct(probes, 99),
                "ttfc_ms_max": max(probes, default=float("nan")),
                "gaps": len(gaps[kind]),
                "gap_ms_p50": pct(gaps[kind], 50),
                "gap_ms_p99": pct(gaps[kind], 99),
                "gap_ms_p999": pct(gaps[kind], 99.9),
                "gap_ms_max": max(gaps[kind], default=float("nan")),
                "service_core_busy": ratio(sum(w.cpu_s for w in ws), seconds),
                "service_core_other_busy": ratio(sum(w.other_s for w in ws), seconds),
                "running_min": min((w.running for w in ws), default=0),
            }
        bursts = [w for w in windows if w.kind == "burst"]
        quiets = [w for w in windows if w.kind == "quiet"]
        logins = [t for w in bursts for t in w.logins_ms]
        # A burst's CPU over that of the quiet window of the same round, of the same length.
        per_login = [
            (b.cpu_s - q.cpu_s * b.seconds / q.seconds) / a.logins * 1000
            for b, q in zip(bursts, quiets, strict=True)
            if q.seconds > 0
        ]
        out["logins"] = {
            "per_burst": a.logins,
            "ok": len(logins),
            "ms_p50": pct(logins, 50),
            "ms_max": max(logins, default=float("nan")),
            "ms_min": min(logins, default=float("nan")),
            "burst_ms_median": statistics.median(w.seconds * 1000 for w in bursts),
            "burst_ms_max": max(w.seconds * 1000 for w in bursts),
            "warmup_burst_ms": warm.seconds * 1000,
            "service_cpu_ms_per_login": statistics.median(per_login) if per_login else None,
        }
        out["added_ttfc_ms_p50"] = out["burst"]["ttfc_ms_p50"] - out["quiet"]["ttfc_ms_p50"]
        out["added_ttfc_ms_p99"] = out["burst"]["ttfc_ms_p99"] - out["quiet"]["ttfc_ms_p99"]
        out["added_gap_ms_p99"] = out["burst"]["gap_ms_p99"] - out["quiet"]["gap_ms_p99"]
        out["windows"] = [
            {
                "kind": w.kind,
                "seconds": w.seconds,
                "running": w.running,
                "probes": len(w.probes_ms),
                "ttfc_ms_p50": pct(w.probes_ms, 50),
                "ttfc_ms_p99": pct(w.probes_ms, 99),
                "service_core_busy": ratio(w.cpu_s, w.seconds),
                "service_core_other_busy": ratio(w.other_s, w.seconds),
            }
            for w in windows
        ]
        out["streams_finished"] = len(self.streams)
        out["errors"] = dict(self.errors)
        return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def check_targets(res: dict[str, Any]) -> dict[str, list[Any]]:
    t: dict[str, list[Any]] = {}
    whole = res.get("whole")
    if whole:
        s = whole["summary"]
        on = [name for name in s if name.startswith("on,")]
        t[f"non-streamed req/s with accounts on >= {TARGET_RPS_RATIO:g} x off"] = [
            all(s[n]["vs_off"] >= TARGET_RPS_RATIO and not s[n]["errors"] for n in on),
            "; ".join(
                f"{n}: {s[n]['vs_off']:.3f} (by CPU per request: {1 / s[n]['cpu_vs_off']:.3f}), "
                f"{s[n]['errors']} errors"
                for n in on
            ),
        ]
    logins = res.get("logins")
    if logins:
        added = logins["added_ttfc_ms_p99"]
        t[f"added TTFC p99 during a burst of logins < {TARGET_ADDED_TTFC_P99_MS:g} ms"] = [
            added < TARGET_ADDED_TTFC_P99_MS and not logins["errors"],
            f"{added:+.1f} ms ({logins['burst']['ttfc_ms_p99']:.1f} ms in bursts, "
            f"{logins['quiet']['ttfc_ms_p99']:.1f} ms quiet); errors {logins['errors'] or 0}",
        ]
    return t


def print_report(res: dict[str, Any], out: Any = sys.stdout) -> None:
    a, m = res["config"], res["machine"]
    w = out.write
    w(
        f"\nquartchat accounts bench: {m['nproc']} x {m['cpu_model']}, Python {m['python']}; "
        f"services on cpu {a['service_cpu']}, harness and upstream on cpu {a['harness_cpu']}; "
        f"upstream {a['chunks']} chunks x {a['interval'] * 1000:g} ms"
        + (
            ""
            if a["hash_nice"] is None
            else f"; what-if: passwords hashed at nice {a['hash_nice']}"
        )
        + "\n"
        f"argon2id verify with quartchat's parameters, in this process: {res['verify_ms']:.1f} ms;"
        f" load average {res['loadavg'][0]:.1f} at the start, {res['loadavg'][1]:.1f} at the end\n"
    )
    changes = res["code"]["quartchat_changes"]
    python = [c for c in changes if c.endswith(".py")]
    w(
        f"code: commit {res['code']['commit']}, quartchat/ "
        + (
            f"with {len(changes)} uncommitted change(s), {len(python)} of Python"
            if changes
            else "as committed"
        )
        + "\n"
    )
    for name, db in res.get("databases", {}).items():
        sizes = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in db["files"].items())
        w(
            f"database of {name}: SQLite ({db.get('journal_mode', '?')}), {db['path']} on "
            f"{db['fstype']} ({db['device']}): {sizes}; {db.get('users', '?')} users, "
            f"{db.get('sessions', '?')} sessions, {db.get('api_tokens', '?')} API tokens\n"
        )
    whole = res.get("whole")
    if whole:
        runs = len(whole["runs"])
        w(
            f"\n1. non-streamed POST /api/chat, {a['whole_concurrency']} keep-alive connections, "
            f"{a['whole_seconds']:g} s per phase, {runs} run(s) in alternating order "
            f"(medians; per run in brackets)\n\n"
        )
        hdr: tuple[str, ...] = (
            "variant",
            "req/s",
            "vs off",
            "CPU/request",
            "vs off",
            "p99 latency",
            "errors",
        )
        rows: list[tuple[str, ...]] = []
        for name, s in whole["summary"].items():
            each = "/".join(f"{x:.0f}" for x in s["rps_runs"])
            vs = "/".join(f"{x:.2f}" for x in s["vs_off_runs"])
            errors = str(s["errors"])
            if s["errors"]:
                errors += " (" + ", ".join(f"{k}: {v}" for k, v in s["error_kinds"].items()) + ")"
            rows.append((
                name,
                f"{s['rps']:.0f} [{each}]",
                f"{s['vs_off']:.3f} [{vs}]",
                f"{s['cpu_us_per_request']:.0f} us",
                f"{s['cpu_vs_off']:.2f}",
                f"{s['latency_ms_p99']:.1f} ms",
                errors,
            ))  # fmt: skip
        table(hdr, rows, w)
        other = [100 * r["core_other_busy"] for run in whole["runs"] for r in run.values()]
        w(
            "\n  vs off = over off's in the same run (median of the runs). CPU/request = the "
            "service's CPU (all\n  threads) per request, the steadier figure on a busy machine: "
            "a core kept busy serves 1 / CPU\n  per request, so at full load on/off req/s = off's "
            "CPU / on's. Uncached = the principal cache off:\n  a database lookup on every "
            f"request. Other work kept cpu {a['service_cpu']} {min(other):.0f}-{max(other):.0f} % "
            "busy during the phases.\n"
        )
    lg = res.get("logins")
    if lg:
        q, b, li = lg["quiet"], lg["burst"], lg["logins"]
        w(
            f"\n2. bursts of {a['logins']} logins while {a['streams']} streams run "
            f"({b['windows']} bursts and {q['windows']} quiet windows as long, alternating; "
            f"probes {a['probe_gap'] * 1000:g} ms apart)\n\n"
        )
        hdr = (
            "window", "streams running", "probes", "probe TTFC p50 / p99 / max",
            "chunk gap p50 / p99 / p99.9 / max (gaps)", "service core (+other)",
        )  # fmt: skip
        rows = []
        for name, x in (("quiet", q), ("login burst", b)):
            rows.append((
                name,
                f">= {x['running_min']}",
                str(x["probes"]),
                f"{x['ttfc_ms_p50']:.1f} / {x['ttfc_ms_p99']:.1f} / {x['ttfc_ms_max']:.1f} ms",
                f"{x['gap_ms_p50']:.1f} / {x['gap_ms_p99']:.1f} / {x['gap_ms_p999']:.1f} / "
                f"{x['gap_ms_max']:.1f} ms ({x['gaps']})",
                f"{100 * x['service_core_busy']:.0f}% (+{100 * x['service_core_other_busy']:.0f}%)",
            ))  # fmt: skip
        table(hdr, rows, w)
        per = li["service_cpu_ms_per_login"]
        w(
            f"\n  added by a burst: TTFC p50 {lg['added_ttfc_ms_p50']:+.1f} ms, "
            f"p99 {lg['added_ttfc_ms_p99']:+.1f} ms; chunk gap p99 {lg['added_gap_ms_p99']:+.1f} ms"
            f" (nominal gap {a['interval'] * 1000:g} ms)\n"
            f"  logins: {li['ok']} ok; each took {li['ms_min']:.0f}-{li['ms_max']:.0f} ms (p50 "
            f"{li['ms_p50']:.0f}: they queue for one hasher); a burst took "
            f"{li['burst_ms_median']:.0f} ms (median; max {li['burst_ms_max']:.0f}, warm-up "
            f"{li['warmup_burst_ms']:.0f}) = {li['burst_ms_median'] / a['logins']:.1f} ms per login\n"
            "  service CPU per login (a burst's minus its quiet window's): "
            + (f"{per:.1f} ms" if per is not None else "-")
            + f"; one argon2id verify here: {res['verify_ms']:.1f} ms\n"
            "  service core = the service's CPU / the windows' time (+other: the rest of that core's"
            " busy time, other work)\n"
            f"  streams: {lg['streams_finished']} finished; errors: "
            + (", ".join(f"{k}: {v}" for k, v in lg["errors"].items()) or "0")
            + "\n"
        )
    w("\ntargets (printed, not enforced):\n")
    for name, (ok, detail) in res["targets"].items():
        w(f"  [{'ok' if ok else 'MISS'}] {name}: {detail}\n")
    w("\n")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="quartchat accounts benchmark (see the module docstring)"
    )
    add = p.add_argument
    add("--whole-concurrency", type=int, default=50, help="connections of the non-streamed runs")
    add(
        "--whole-seconds",
        type=float,
        default=5.0,
        help="seconds per non-streamed phase (0: skip 1.)",
    )
    add("--repeat", type=int, default=3, help="runs of every non-streamed variant")
    add("--no-uncached", dest="uncached", action="store_false",
        help="skip the service with the principal cache turned off")  # fmt: skip
    add("--streams", type=int, default=200, help="streams kept running during the logins")
    add("--stagger", type=float, default=2.0, help="seconds over which their starts are spread")
    add("--logins", type=int, default=20, help="logins per burst")
    add("--rounds", type=int, default=15, help="bursts (each with a quiet window; 0: skip 2.)")
    add("--probe-gap", type=float, default=0.03, help="seconds between probe streams")
    add("--window-pause", type=float, default=0.3, help="seconds between windows")
    add("--hash-nice", type=int, default=None, metavar="N",
        help="what-if: the 'on' service checks passwords in threads of nice N (quartchat: 19)")  # fmt: skip
    add("--chunks", type=int, default=200, help="content chunks per upstream stream")
    add("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    add("--service-cpu", type=int, default=0, help="core the services are pinned to")
    add("--harness-cpu", type=int, default=1, help="core of the load generator and the upstream")
    add("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    add("--log-level", default="INFO", help="the services' LOG_LEVEL (their logs go to files)")
    add("--data-root", default=None, help="where the services' DATA_DIRs go (default: $TMPDIR)")
    add("--keep-data", action="store_true", help="keep the DATA_DIRs (their path is printed)")
    add("--outdir", default=str(ROOT / "artifacts" / "bench"), help="logs go here")
    add("--json", nargs="?", const="-", default=None, metavar="PATH",
        help="also write the results as JSON, to PATH or to stdout")  # fmt: skip
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.streams < 1 or args.logins < 1:
        p.error("--streams and --logins must be at least 1")
    return args


async def run(
    args: argparse.Namespace, services: dict[str, Service], upstream: Child
) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop between awaits, then clean up
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    variants = {"off": target(services["off"], "", "off", args.chunks)}
    for name in ("on", "uncached"):
        if name in services:
            for kind in ("token", "cookie"):
                label = f"{name}, {kind}"
                variants[label] = target(services[name], kind, label, args.chunks)
    bench = Bench(args, [s.child for s in services.values()], upstream, variants)
    res: dict[str, Any] = {}
    if args.whole_seconds > 0:
        say("1. non-streamed requests/s ...")
        res["whole"] = await whole_runs(args, bench, variants)
    if args.rounds > 0:
        await bench.settle()
        await asyncio.sleep(args.pause)
        say("2. logins while streams run ...")
        res["logins"] = await Logins(args, services["on"], variants["on, token"]).run()
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        say("warning: one core only; the services and the harness share it")
        args.service_cpu = args.harness_cpu = 0
    limit = raise_fd_limit(4 * (args.streams + args.whole_concurrency) + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="accounts-logs-", dir=outdir))
    data = Path(tempfile.mkdtemp(prefix="accounts-bench-data-", dir=args.data_root))
    args.admin_password = secrets.token_urlsafe(18)

    stop_children_on_exit()
    code = code_version()
    verify = verify_ms()  # before anything else runs on this core
    load0 = os.getloadavg()[0]
    env = child_env()
    uport = free_port()
    services: dict[str, Service] = {}
    try:
        command = upstream_argv("bench", uport, args.chunks, args.interval)
        upstream = spawn("upstream", command, args.harness_cpu, env, logdir)
        on_prelude = "" if args.hash_nice is None else HASH_NICE_PRELUDE.format(nice=args.hash_nice)
        kinds = [("on", True, on_prelude), ("off", False, "")]
        if args.uncached:
            kinds.append(("uncached", True, UNCACHED_PRELUDE))
        for name, accounts, prelude in kinds:
            port, data_dir = free_port(), data / name
            data_dir.mkdir()
            environment = service_env(env, uport, port, data_dir, args.log_level, accounts)
            if accounts:
                environment.update(ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=args.admin_password)
            command = service_argv(sys.executable, prelude, report=False)
            child = spawn(name, command, args.service_cpu, environment, logdir)
            services[name] = Service(name, child, port, data_dir, accounts)
        wait_for_port(upstream, uport)
        for s in services.values():
            wait_for_port(s.child, s.port, timeout=60)  # migrations and a hash come first
            if s.accounts:
                sign_in(s, args.admin_password)
        say(
            f"upstream pid {upstream.pid} on :{uport} cpu {args.harness_cpu}; "
            + "; ".join(f"{s.name} pid {s.child.pid} on :{s.port}" for s in services.values())
            + f" (cpu {args.service_cpu}); fd limit {limit}; logs {logdir}; data {data}"
        )
        res = on_uvloop(run(args, services, upstream))
        res["databases"] = {
            s.name: database_report(s.data_dir) for s in services.values() if s.accounts
        }
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        return 130
    finally:
        stop_children()
        if args.keep_data:
            say(f"data kept in {data}")
        else:
            shutil.rmtree(data, ignore_errors=True)
    res["verify_ms"] = verify
    res["code"] = code
    res["loadavg"] = [load0, os.getloadavg()[0]]
    res["config"] = {k: v for k, v in vars(args).items() if k != "admin_password"}
    res["machine"] = machine()
    res["targets"] = check_targets(res)
    print_report(res)
    if args.json:
        write_json(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
