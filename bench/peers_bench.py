#!/usr/bin/env python
"""quartchat against its peers (issue 19): nginx, naive relays and quartchat on each server.

    .venv/bin/python bench/peers_bench.py                      # about 5 minutes per round
    .venv/bin/python bench/relay_bench.py --peers              # the same
    .venv/bin/python bench/peers_bench.py --quick              # about 2 minutes: the harness
    .venv/bin/python bench/peers_bench.py --baseline-ref main --repeat 2 --json out.json
    .venv/bin/python bench/peers_bench.py --only nginx,naive-uvicorn,quartchat-uvicorn

One fake upstream (`bench/upstream.py`, 200 chunks 20 ms apart) and the load generator (relay_bench's
raw asyncio protocols under uvloop) on the harness core (1); each peer, one at a time, on the
service core (0), started, measured, stopped:

* nginx: `proxy_pass` straight to the upstream (nginx_floor.py: one process, unbuffered,
  keep-alive upstream, no access log); the load sends it what quartchat sends the upstream;
* the naive Quart relay (bench/peers/naive_quart.py) on uvicorn (uvloop + httptools), on granian
  (`--interface asgi`, uvloop) and on hypercorn; the naive FastAPI + httpx relay
  (bench/peers/naive_fastapi.py) on uvicorn; no credential, no access log;
* quartchat on hypercorn and on uvicorn (`SERVER=hypercorn|uvicorn python -m quartchat`; while the
  working tree has no SERVER setting, uvicorn's command line with quartchat's app factory after
  `quartchat migrate` and `create-admin`) and on granian (its command line, the same factory),
  accounts on (SQLite, the first admin, logged in, an API token made through the API), the Bearer
  token on every request, LOG_LEVEL=INFO (an access line per request, as deployed);
* with `--baseline-ref REF`: quartchat of that commit on hypercorn ("main today"), extracted as
  relay_bench does.

Each server listens with a backlog of 4,096 (the kernel caps it at somaxconn); CPU is utime+stime
from /proc of the server's process and its descendants (hypercorn's and granian's command lines
serve from a worker process). Per peer: warm-up; whole completions (`POST /api/chat`; nginx:
`/v1/chat/completions`) over `--whole-concurrency` keep-alive connections for `--whole-seconds`
(requests/s, CPU per request), for quartchat `/v1/chat/completions` too; `--streams` streams
straight to the upstream, then as many through the peer (CPU per relayed chunk, time to first
chunk added over direct); `--top-streams` streams through the peer (errors). In `--repeat` rounds,
the order reversing from round to round; medians.

It prints the issue's table, quartchat's own code (quartchat minus the naive Quart relay on the
same server) and the issue's targets next to the figures, marked met or missed. A script, not a
test: the targets are never enforced; the exit status is non-zero only if something failed to
run (a peer whose package or binary is missing is skipped with a line saying so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib.util
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from accounts_bench import ADMIN_EMAIL, Service, code_version, service_env, sign_in
from gateway_bench import MODEL, SERVICE_CHUNK, openai_target, probe_v1
from nginx_floor import nginx_argv
from relay_bench import (
    CHILDREN,
    CLK_TCK,
    HOST,
    ROOT,
    WORD,
    Baseline,
    Bench,
    Child,
    StreamPhase,
    Target,
    check_imported_from,
    child_env,
    core_busy,
    free_port,
    http_post,
    judge_service_stream,
    machine,
    materialise_baseline,
    on_uvloop,
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

from quartchat.config import Settings

T = TypeVar("T")
BACKLOG = 4096  # every server's listen backlog: 1,000 clients connect at once
# Targets of issue 19 (printed next to the figures, never enforced).
FAST_SERVER = "uvicorn"  # the fastest supported server (the lead's decision, ISSUE19.md)
FAST_MAX_X_NGINX = 3.0  # CPU per relayed chunk at 200 streams, over nginx's
FAST_MIN_RPS = 3000.0  # whole completions/s at c50, accounts on, token auth
HYPERCORN_MAX_X_NGINX = 5.0
HYPERCORN_MIN_RPS = 2000.0
# The issue's own machine served the naive Quart relay at these rates: its whole-completion
# targets are these shares of the naive relay on the same server, which carry over to a slower
# (or busier) machine where the absolute rates cannot.
ISSUE_NAIVE_RPS = {"uvicorn": 4005.0, "hypercorn": 2078.0}
OWN_MAX_US_PER_CHUNK = 5.0  # quartchat minus the naive Quart relay, same server
OWN_MAX_MS_PER_REQUEST = 0.1
# "Time to first chunk p99 no worse than today": 200 streams opened at once wait for the server
# to start each of them, so p99 is hundreds of ms on a slow core, and moves by several percent
# between identical trees; a p99 within this share over the baseline's is read as "no worse".
TTFC_ALLOWANCE = 0.10
# A phase during which others kept the service core busier than this is flagged in the table.
OTHERS_FLAG = 0.10


# --------------------------------------------------------------------------------------------
# The peers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str  # what --only/--skip take
    label: str  # the table's row
    kind: str  # nginx | naive | quartchat | baseline
    server: str  # nginx | uvicorn | granian | hypercorn
    app: str = ""  # the ASGI app a server's command line serves


NAIVE = "bench.peers.naive_quart:app"
FACTORY = "bench.peers.quartchat_factory:create_app"
# In the order of the table.
PEERS = (
    Peer("nginx", "nginx proxy_pass (the practical limit)", "nginx", "nginx"),
    Peer("naive-uvicorn", "naive Quart relay on uvicorn", "naive", "uvicorn", NAIVE),
    Peer("naive-granian", "naive Quart relay on granian", "naive", "granian", NAIVE),
    Peer("naive-hypercorn", "naive Quart relay on hypercorn", "naive", "hypercorn", NAIVE),
    Peer("quartchat-uvicorn", "quartchat on uvicorn", "quartchat", "uvicorn"),
    Peer("quartchat-granian", "quartchat on granian", "quartchat", "granian", FACTORY),
    Peer("quartchat-hypercorn", "quartchat on hypercorn", "quartchat", "hypercorn"),
    Peer("baseline", "quartchat {ref} on hypercorn", "baseline", "hypercorn"),
    Peer(
        "fastapi-uvicorn",
        "naive FastAPI + httpx on uvicorn",
        "naive",
        "uvicorn",
        "bench.peers.naive_fastapi:app",
    ),
)
SERVER_MODULES = {
    "uvicorn": ("uvicorn", "uvloop", "httptools"),
    "granian": ("granian", "uvloop"),
    "hypercorn": ("hypercorn",),
}


def missing(peer: Peer, args: argparse.Namespace) -> str | None:
    """Why `peer` cannot run here (a package or binary missing), or None."""
    if peer.kind == "nginx":
        return None if args.nginx and Path(args.nginx).is_file() else "no nginx binary (--nginx)"
    if peer.kind == "baseline" and not args.baseline_ref:
        return "no --baseline-ref"
    modules = list(SERVER_MODULES[peer.server])
    if "fastapi" in peer.app:
        modules.append("fastapi")
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        return (
            f"{', '.join(absent)} not installed in {sys.executable} "
            "(.venv/bin/pip install -r requirements-bench.txt)"
        )
    return None


def server_setting() -> bool:
    """Whether the working tree's quartchat reads SERVER (hypercorn | uvicorn)."""
    return "server" in Settings.model_fields


class TreeChild(Child):
    """A server and the processes it started (hypercorn's and granian's workers): CPU and memory
    summed over all of them; stopping it also ends any it leaves behind."""

    def __init__(self, child: Child) -> None:
        super().__init__(child.name, child.popen, child.log)
        self.seen: set[int] = set()

    def pids(self) -> list[int]:
        out, i = [self.pid], 0
        while i < len(out):
            with contextlib.suppress(OSError):
                for task in os.listdir(f"/proc/{out[i]}/task"):
                    with open(f"/proc/{out[i]}/task/{task}/children") as f:
                        out += [int(p) for p in f.read().split()]
            i += 1
        self.seen.update(out[1:])
        return out

    def cpu_times(self) -> tuple[float, float]:
        user = system = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:  # it ended between the listing and the read
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            user += int(fields[11]) / CLK_TCK
            system += int(fields[12]) / CLK_TCK
        return user, system

    def status_kb(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        return total

    def loaded(self, name: str) -> bool:
        """Whether a shared library whose path contains `name` is mapped in any of the tree."""
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
                if any(name in line for line in f):
                    return True
        return False

    def stop(self) -> None:
        self.pids()
        super().stop()
        for pid in self.seen:  # workers its master did not stop (ours: it started them)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def spawn_tree(
    name: str, argv: Sequence[str], cpu: int, env: dict[str, str], logdir: Path, cwd: Path = ROOT
) -> TreeChild:
    child = spawn(name, argv, cpu, env, logdir, cwd)
    tree = TreeChild(child)
    CHILDREN[CHILDREN.index(child)] = tree  # stopped, as a tree, if the run is cut short
    return tree


def server_argv(server: str, app: str, port: int, *, factory: bool) -> list[str]:
    """A server's own command line serving `app` on HOST:port, one worker, no access log."""
    py = sys.executable
    if server == "uvicorn":
        argv = [
            py, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-proxy-headers", "--no-access-log",
            "--backlog", str(BACKLOG), "--log-level", "warning",
        ]  # fmt: skip
        return argv + (["--factory"] if factory else [])
    if server == "granian":
        argv = [
            py, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
            "--loop", "uvloop", "--workers", "1", "--backlog", str(BACKLOG), "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        return argv + (["--factory"] if factory else []) + [app]
    if server == "hypercorn":
        return [py, "-m", "hypercorn", "--bind", f"{HOST}:{port}", "--backlog", str(BACKLOG), app]
    raise ValueError(server)


@dataclass
class Running:
    """A peer started: its process tree, port, how it was started, its credential."""

    peer: Peer
    child: TreeChild
    port: int
    how: str
    token: str = ""
    v1: bool = False
    data_dir: Path | None = None


@dataclass
class Context:
    args: argparse.Namespace
    logdir: Path
    data: Path
    upstream: Child
    uport: int
    baseline: Baseline | None
    password: str
    server_setting: bool
    notes: dict[str, str] = field(default_factory=dict)  # how each peer was started


def quartchat_env(ctx: Context, port: int, data_dir: Path, tree: Path) -> dict[str, str]:
    env = service_env(child_env(), ctx.uport, port, data_dir, ctx.args.log_level, accounts=True)
    env.update(ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=ctx.password, PYTHONPATH=str(tree))
    top = max(ctx.args.streams, ctx.args.top_streams)
    if top > 1000:  # the service's default pool holds 1000 upstream connections
        env["UPSTREAM_MAX_CONNECTIONS"] = str(top + 100)
    return env


def prepare_quartchat(env: dict[str, str], log: Path) -> None:
    """What `python -m quartchat` does before it serves, for a server started on its own:
    migrations, then the first admin (the password on stdin)."""
    py = sys.executable
    with open(log, "ab") as out:
        for argv, stdin in (
            ([py, "-m", "quartchat", "migrate"], None),
            (
                [py, "-m", "quartchat", "create-admin", "--email", ADMIN_EMAIL, "--password-stdin"],
                env["ADMIN_PASSWORD"] + "\n",
            ),
        ):
            done = subprocess.run(
                argv,
                cwd=ROOT,
                env=env,
                input=stdin.encode() if stdin else None,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
            if done.returncode:
                raise SystemExit(f"{' '.join(argv[2:4])} failed; see {log}")


def start(ctx: Context, peer: Peer) -> Running:
    """Start `peer` on the service core and wait until it serves (and, for quartchat, until the
    script has a token)."""
    args, port = ctx.args, free_port()
    cpu = args.service_cpu
    name = f"{peer.name}-{port}"
    upstream_base = f"http://{HOST}:{ctx.uport}/v1"
    if peer.kind == "nginx":
        prefix = ctx.logdir / name
        prefix.mkdir()
        top = max(args.streams, args.top_streams, args.whole_concurrency)
        argv = nginx_argv(args.nginx, prefix, port, ctx.uport, top)
        child = spawn_tree(name, argv, cpu, child_env(), ctx.logdir)
        wait_for_port(child, port)
        return Running(peer, child, port, "nginx, one process (master_process off)")
    if peer.kind == "naive":
        env = child_env()
        env.update(OPENAI_API_BASE=upstream_base, OPENAI_API_KEY="sk-bench-0", OPENAI_MODEL=MODEL)
        argv = server_argv(peer.server, peer.app, port, factory=False)
        child = spawn_tree(name, argv, cpu, env, ctx.logdir)
        wait_for_port(child, port)
        return Running(peer, child, port, " ".join(argv[2:]))
    # quartchat: of the working tree, or the baseline's on hypercorn.
    tree = ctx.baseline.tree if peer.kind == "baseline" and ctx.baseline else ROOT
    data_dir = Path(tempfile.mkdtemp(prefix=f"{peer.name}-", dir=ctx.data))
    env = quartchat_env(ctx, port, data_dir, tree)
    report = True  # the service prints which quartchat it imported: checked below
    if peer.server == "hypercorn" or (peer.server == "uvicorn" and ctx.server_setting):
        if ctx.server_setting and peer.kind != "baseline":
            env["SERVER"] = peer.server
            how = f"SERVER={peer.server} python -m quartchat"
        else:
            how = "python -m quartchat (hypercorn" + (
                ", the baseline's only server)" if peer.kind == "baseline" else
                "; the working tree has no SERVER setting)"
            )  # fmt: skip
        argv = service_argv(sys.executable, "", report=True)
    else:
        prepare_quartchat(env, ctx.logdir / f"{name}.prepare.log")
        argv = server_argv(peer.server, peer.app or FACTORY, port, factory=True)
        report = False  # the server's command line imports the working tree's package
        why = "" if peer.server == "granian" else " (the working tree has no SERVER setting)"
        how = f"quartchat migrate, create-admin, then {' '.join(argv[2:3])} --factory{why}"
    child = spawn_tree(name, argv, cpu, env, ctx.logdir, cwd=tree)
    wait_for_port(child, port, timeout=90)  # migrations and a password hash come first
    if report:
        check_imported_from(child, tree)
    if peer.server == "uvicorn" and not (child.loaded("httptools") and child.loaded("uvloop")):
        raise SystemExit(f"{how} does not serve with uvicorn (no httptools/uvloop mapped)")
    service = Service(peer.name, child, port, data_dir, accounts=True)
    sign_in(service, ctx.password)
    v1 = probe_v1(service) is None
    return Running(peer, child, port, how, service.token, v1, data_dir)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def targets(run: Running, uport: int, chunks: int) -> dict[str, Target]:
    """What the load sends to this peer (streamed and whole), to the upstream straight (the
    time-to-first-chunk baseline), and for quartchat to /v1."""
    out: dict[str, Target] = {
        # `proc` of the direct phase: the peer (idle); the upstream's CPU is nobody's here.
        "direct": openai_target("direct", uport, run.child, chunks, usage=True),
    }
    if run.peer.kind == "nginx":
        out["peer"] = openai_target(run.peer.name, run.port, run.child, chunks, usage=True)
        return out
    body = json.dumps({"messages": [{"role": "user", "content": "benchmark"}]}).encode()
    headers = {"Authorization": f"Bearer {run.token}"} if run.token else {}
    expected = WORD * chunks
    out["peer"] = Target(
        run.peer.name,
        run.port,
        http_post("/api/chat/stream", run.port, body, close=True, headers=headers),
        http_post("/api/chat", run.port, body, close=False, headers=headers),
        SERVICE_CHUNK,
        lambda status, b: judge_service_stream(status, b, expected),
        run.child,
    )
    if run.v1:
        out["v1"] = openai_target(
            f"{run.peer.name} /v1", run.port, run.child, chunks, key=run.token
        )
    return out


def streamed(phase: StreamPhase) -> dict[str, Any]:
    s = phase.summary()
    return {
        "n": phase.n,
        "ok": phase.ok,
        "errors": s["errors"],
        "error_kinds": phase.errors,
        "error_samples": phase.error_samples,
        "chunks": phase.chunks,
        "cpu_s": phase.service_cpu_s,
        "cpu_us_per_chunk": ratio(phase.service_cpu_s, phase.chunks) * 1e6,
        "core_busy": ratio(phase.service_cpu_s, phase.wall_s),
        "ttfc_ms_p50": s["ttfc_ms_p50"],
        "ttfc_ms_p99": s["ttfc_ms_p99"],
        "duration_ms_p99": s["duration_ms_p99"],
        "chunks_per_event": ratio(phase.chunks, phase.events),
        "listen_drops": phase.listen_drops,
        "harness_core_busy": s["harness_core_busy"],
        "peak_rss_mb": phase.peak_rss_kb / 1024,
    }


async def watched(args: argparse.Namespace, child: Child, phase: Awaitable[T]) -> tuple[T, float]:
    """`phase`'s result, and the share of the service core's time that went to neither the peer
    nor softirq meanwhile: other sessions' work on a shared machine, which slows the peer's
    (their caches, their turn on the core) and so its figures."""
    busy0, soft0 = core_busy(args.service_cpu)
    mine0, t0 = child.cpu_seconds(), time.perf_counter()
    result = await phase
    busy1, soft1 = core_busy(args.service_cpu)
    others = (busy1 - busy0) - (soft1 - soft0) - (child.cpu_seconds() - mine0)
    return result, max(0.0, ratio(others, time.perf_counter() - t0))


async def measure(
    args: argparse.Namespace, run: Running, upstream: Child, uport: int
) -> dict[str, Any]:
    """One peer's turn: warm-up, whole completions, streams against direct, the top level."""
    t = targets(run, uport, args.chunks)
    bench = Bench(args, [run.child], upstream, t)
    peer = t["peer"]
    warm = await bench.stream_phase(peer, 20)  # imports, pools, code paths; a bad token fails
    whole = await bench.whole_phase(peer, 10, 0.5)
    if warm.errors or whole["errors"] or not whole["requests"]:
        raise SystemExit(
            f"warm-up of {run.peer.name} failed: {warm.errors} {warm.error_samples} "
            f"{whole['error_kinds']}; see {run.child.log}"
        )
    out: dict[str, Any] = {}
    c, secs = args.whole_concurrency, args.whole_seconds
    if secs > 0:  # first, while the peer's upstream pool holds only the warm-up's connections
        for key, target in (("whole", peer), ("whole_v1", t.get("v1"))):
            if target is None:
                continue
            await asyncio.sleep(args.pause)
            w, others = await watched(args, run.child, bench.whole_phase(target, c, secs))
            out[key] = {**w, "core_others": others}
    if args.streams > 0:
        await asyncio.sleep(args.pause)
        direct = await bench.stream_phase(t["direct"], args.streams)
        await asyncio.sleep(args.pause)
        phase, others = await watched(args, run.child, bench.stream_phase(peer, args.streams))
        d = direct.summary()
        out["streams"] = {
            **streamed(phase),
            "core_others": others,
            "direct_errors": d["errors"],
            "direct_ttfc_ms_p99": d["ttfc_ms_p99"],
            "added_ttfc_ms_p50": phase.summary()["ttfc_ms_p50"] - d["ttfc_ms_p50"],
            "added_ttfc_ms_p99": phase.summary()["ttfc_ms_p99"] - d["ttfc_ms_p99"],
        }
    if args.top_streams > 0:
        await asyncio.sleep(args.pause)
        # Errors are the question here; a peer that falls behind may take several times the
        # upstream's duration, which is not an error of any stream (its pace is printed).
        factor = args.timeout_factor
        args.timeout_factor = args.top_timeout_factor
        try:
            phase, others = await watched(
                args, run.child, bench.stream_phase(peer, args.top_streams)
            )
        finally:
            args.timeout_factor = factor
        out["top"] = {**streamed(phase), "core_others": others}
    out["vmhwm_mb"] = run.child.status_kb("VmHWM") / 1024
    return out


def order(names: Sequence[str], i: int) -> list[str]:
    """Round i's order: reversed every other round, so that no peer is always measured after the
    same one's leftovers, or always later on a machine whose speed drifts."""
    return list(names) if i % 2 == 0 else list(names)[::-1]


def brief(name: str, r: dict[str, Any]) -> str:
    parts = []
    if "whole" in r:
        w = r["whole"]
        parts.append(f"{w['rps']:.0f} req/s ({w['service_cpu_us_per_request']:.0f} us CPU/req)")
    if "whole_v1" in r:
        parts.append(f"/v1 {r['whole_v1']['rps']:.0f} req/s")
    if "streams" in r:
        s = r["streams"]
        parts.append(
            f"{s['n']} streams {s['cpu_us_per_chunk']:.1f} us/chunk, added TTFC p99 "
            f"{s['added_ttfc_ms_p99']:+.1f} ms, errors {s['errors']}"
        )
    if "top" in r:
        x = r["top"]
        parts.append(
            f"{x['n']} streams: errors {x['errors']}, p99 duration {x['duration_ms_p99'] / 1000:.1f} s"
        )
    return f"  {name}: " + "; ".join(parts)


async def rounds(ctx: Context, peers: Sequence[Peer]) -> dict[str, Any]:
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop between awaits, then clean up
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    args = ctx.args
    by_name = {p.name: p for p in peers}
    results: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
    failed: dict[str, str] = {}
    for i in range(args.repeat):
        say(f"round {i + 1} of {args.repeat}")
        for name in order([p.name for p in peers], i):
            if name in failed:
                continue
            peer = by_name[name]
            before = len(CHILDREN)
            run = None
            try:
                run = start(ctx, peer)  # blocking: nothing else runs between two peers
                ctx.notes[name] = run.how
                r = await measure(args, run, ctx.upstream, ctx.uport)
            except (SystemExit, Exception) as exc:  # would not start or serve: say so, go on
                failed[name] = str(exc) or type(exc).__name__
                say(f"  {name} FAILED: {failed[name]}")
                continue
            finally:
                while len(CHILDREN) > before:  # the peer's server, also one that failed
                    CHILDREN.pop().stop()
                if run is not None and run.data_dir:
                    shutil.rmtree(run.data_dir, ignore_errors=True)
            r["round"] = i
            results[name].append(r)
            say(brief(name, r))
    return {"rounds": results, "failed": failed}


# --------------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------------


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per peer, the medians over the rounds (errors: summed)."""
    keys = {
        "whole": (
            "rps", "service_cpu_us_per_request", "latency_ms_p99", "service_core_busy",
            "harness_core_busy", "core_others",
        ),
        "whole_v1": ("rps", "service_cpu_us_per_request", "core_others"),
        "streams": (
            "cpu_us_per_chunk", "added_ttfc_ms_p50", "added_ttfc_ms_p99", "ttfc_ms_p99",
            "direct_ttfc_ms_p99", "core_busy", "chunks_per_event", "harness_core_busy",
            "core_others",
        ),
        "top": ("cpu_us_per_chunk", "duration_ms_p99", "core_busy", "core_others"),
    }  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        if not runs:
            continue
        m: dict[str, Any] = {"rounds": len(runs)}
        for part, ks in keys.items():
            got = [r[part] for r in runs if part in r]
            if not got:
                continue
            for k in ks:
                m[f"{part}.{k}"] = statistics.median(float(g[k]) for g in got)
            m[f"{part}.errors"] = sum(int(g["errors"]) for g in got)
        out[name] = m
    return out


def own_code(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """quartchat minus the naive Quart relay on the same server, per chunk and per request."""
    out: dict[str, dict[str, float]] = {}
    for server in ("uvicorn", "granian", "hypercorn"):
        q, n = summary.get(f"quartchat-{server}"), summary.get(f"naive-{server}")
        if not q or not n:
            continue
        row: dict[str, float] = {}
        if "streams.cpu_us_per_chunk" in q and "streams.cpu_us_per_chunk" in n:
            row["us_per_chunk"] = q["streams.cpu_us_per_chunk"] - n["streams.cpu_us_per_chunk"]
        req = "whole.service_cpu_us_per_request"
        if req in q and req in n:
            row["ms_per_request"] = (q[req] - n[req]) / 1000
            v1 = "whole_v1.service_cpu_us_per_request"
            if v1 in q:
                row["ms_per_request_v1"] = (q[v1] - n[req]) / 1000
        out[server] = row
    return out


def check(res: dict[str, Any]) -> list[tuple[bool | None, str, str]]:
    """The issue's targets against this run's medians: (met, target, figures); None: not known."""
    m, own = res["summary"], res["own_code"]
    args = res["config"]
    out: list[tuple[bool | None, str, str]] = []
    nginx = m.get("nginx", {}).get("streams.cpu_us_per_chunk")
    n, top = args["streams"], args["top_streams"]

    def server_targets(server: str, max_x: float, min_rps: float, what: str) -> None:
        q = m.get(f"quartchat-{server}")
        if not q:
            out.append((None, f"quartchat on {server}{what}", "not measured"))
            return
        chunk = q.get("streams.cpu_us_per_chunk")
        if chunk is not None and nginx:
            x = chunk / nginx
            out.append((
                x <= max_x,
                f"{server}{what}: CPU per relayed chunk <= {max_x:g} x nginx at {n} streams",
                f"{chunk:.1f} / {nginx:.1f} us = {x:.2f} x",
            ))  # fmt: skip
        if "top.errors" in q:
            out.append((
                q["top.errors"] == 0,
                f"{server}{what}: 0 errors at {top} streams",
                f"{q['top.errors']} errors",
            ))  # fmt: skip
        if "whole.rps" in q:
            out.append((
                q["whole.rps"] >= min_rps and q["whole.errors"] == 0,
                f"{server}{what}: whole completions >= {min_rps:,.0f}/s at c{args['whole_concurrency']}"
                " (accounts on, token auth)",
                f"{q['whole.rps']:,.0f}/s, {q['whole.errors']} errors",
            ))  # fmt: skip
            naive = m.get(f"naive-{server}", {}).get("whole.rps")
            if naive:
                share = min_rps / ISSUE_NAIVE_RPS[server]
                out.append((
                    q["whole.rps"] >= share * naive,
                    f"{server}{what}: the same, scaled to this machine: >= {share:.2f} x the naive"
                    f" Quart relay on {server} ({min_rps:,.0f} / {ISSUE_NAIVE_RPS[server]:,.0f}"
                    " on the issue's machine)",
                    f"{q['whole.rps']:,.0f} vs {share * naive:,.0f}/s"
                    f" ({q['whole.rps'] / naive:.2f} x naive)",
                ))  # fmt: skip

    server_targets(FAST_SERVER, FAST_MAX_X_NGINX, FAST_MIN_RPS, " (the fastest supported)")
    server_targets("hypercorn", HYPERCORN_MAX_X_NGINX, HYPERCORN_MIN_RPS, "")
    # The same load reaches both, so their own p99s compare without the direct phase's noise.
    base = m.get("baseline", {}).get("streams.ttfc_ms_p99")
    for server in (FAST_SERVER, "hypercorn"):
        q = m.get(f"quartchat-{server}", {}).get("streams.ttfc_ms_p99")
        name = f"{server}: TTFC p99 at {n} streams no worse than today (main on hypercorn)"
        if base is None or q is None:
            why = "needs --baseline-ref (today's main)" if base is None else "not measured"
            out.append((None, name, why))
            continue
        out.append((
            q <= base * (1 + TTFC_ALLOWANCE),
            name,
            f"{q:.0f} vs {base:.0f} ms ({ratio(q, base):.2f} x; up to "
            f"{1 + TTFC_ALLOWANCE:.2f} x read as noise)",
        ))  # fmt: skip
    for server, row in own.items():
        if "us_per_chunk" in row:
            v = row["us_per_chunk"]
            out.append((
                v <= OWN_MAX_US_PER_CHUNK,
                f"{server}: quartchat's own code <= {OWN_MAX_US_PER_CHUNK:g} us per chunk",
                f"{v:+.1f} us",
            ))  # fmt: skip
        if "ms_per_request" in row:
            v = row["ms_per_request"]
            extra = (
                f" (/v1/chat/completions: {row['ms_per_request_v1']:+.3f} ms)"
                if "ms_per_request_v1" in row else ""
            )  # fmt: skip
            out.append((
                v <= OWN_MAX_MS_PER_REQUEST,
                f"{server}: quartchat's own code <= {OWN_MAX_MS_PER_REQUEST:g} ms per whole completion",
                f"{v:+.3f} ms{extra}",
            ))  # fmt: skip
    return out


def label(peer: Peer, res: dict[str, Any]) -> str:
    ref = (res.get("baseline") or {}).get("ref", "")
    return peer.label.format(ref=f"{ref} ({res['baseline']['commit'][:10]})" if ref else "")


def disturbed(x: dict[str, Any]) -> str:
    """The most the service core did for others during one of the peer's phases (medians), with
    a mark past OTHERS_FLAG: figures measured beside someone else's load."""
    worst = max((v for k, v in x.items() if k.endswith(".core_others")), default=0.0)
    return f"{100 * worst:.0f}%" + (" !" if worst > OTHERS_FLAG else "")


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(res: dict[str, Any], out: Any = sys.stdout) -> None:
    w = out.write
    a, mach = res["config"], res["machine"]
    m = res["summary"]
    w(
        f"\nquartchat peers bench, {res['date']}, commit {res['code']['commit']}"
        + (" (quartchat/ modified)" if res["code"]["quartchat_changes"] else "")
        + f"\n  upstream: {a['chunks']} chunks x {a['interval'] * 1000:g} ms; each server alone "
        f"on cpu {a['service_cpu']}, harness on cpu {a['harness_cpu']}; {mach['nproc']} x "
        f"{mach['cpu_model']}; load average {res['loadavg'][0]:.2f} -> {res['loadavg'][1]:.2f}\n"
        f"  {a['repeat']} round(s), medians; streams {a['streams']}, errors at {a['top_streams']}; "
        f"whole completions at c{a['whole_concurrency']} keep-alive, {a['whole_seconds']:g} s\n"
    )
    for name, why in res["skipped"].items():
        w(f"  skipped {name}: {why}\n")
    for name, why in res["failed"].items():
        w(f"  FAILED {name}: {why}\n")
    for name, how in res["started"].items():
        w(f"  {name}: {how}\n")
    w("\n")
    nginx = m.get("nginx", {}).get("streams.cpu_us_per_chunk")
    hdr = (
        "relay", "CPU us per relayed chunk", "x nginx", "whole completions/s", "CPU us/request",
        "TTFC p50/p99 added", "errors at " + f"{a['top_streams']:,}", "others on core",
    )  # fmt: skip
    rows = []
    for peer in PEERS:
        x = m.get(peer.name)
        if x is None:
            continue
        chunk = x.get("streams.cpu_us_per_chunk")
        rows.append((
            label(peer, res),
            fmt(chunk, ".1f"),
            fmt(ratio(chunk, nginx) if chunk is not None and nginx else None, ".1f"),
            fmt(x.get("whole.rps"), ",.0f"),
            fmt(x.get("whole.service_cpu_us_per_request"), ".0f"),
            f"{fmt(x.get('streams.added_ttfc_ms_p50'), '+.1f')}/"
            f"{fmt(x.get('streams.added_ttfc_ms_p99'), '+.1f')} ms",
            fmt(x.get("top.errors"), "d"),
            disturbed(x),
        ))  # fmt: skip
    table(hdr, rows, w)
    v1 = [(p, m[p.name]) for p in PEERS if "whole_v1.rps" in m.get(p.name, {})]
    if v1:
        w("\n  POST /v1/chat/completions, whole: ")
        w("; ".join(
            f"{label(p, res)} {x['whole_v1.rps']:,.0f}/s, {x['whole_v1.service_cpu_us_per_request']:.0f} us CPU/request"
            for p, x in v1
        ) + "\n")  # fmt: skip
    w(
        f"\n  CPU = utime+stime of the server's processes (/proc) over the phase / upstream chunks\n"
        f"  relayed ({a['streams']} streams at once) or / whole completions served; x nginx = over\n"
        f"  nginx's per chunk; TTFC added = the peer's time-to-first-chunk percentile minus the same\n"
        f"  {a['streams']} streams straight to the upstream; errors summed over the rounds; others on\n"
        f"  core = the most of cpu {a['service_cpu']}'s time another process took during one of the peer's\n"
        f"  phases (not softirq; '!' past {100 * OTHERS_FLAG:.0f}%: its figures are disturbed).\n"
    )
    own = res["own_code"]
    if own:
        w("\nquartchat's own code (quartchat minus the naive Quart relay on the same server):\n\n")
        own_rows = []
        for server, row in own.items():
            q, n = m[f"quartchat-{server}"], m[f"naive-{server}"]
            own_rows.append((
                server,
                f"{fmt(q.get('streams.cpu_us_per_chunk'), '.1f')} - "
                f"{fmt(n.get('streams.cpu_us_per_chunk'), '.1f')} = {fmt(row.get('us_per_chunk'), '+.1f')}",
                f"{fmt(q.get('whole.service_cpu_us_per_request'), '.0f')} - "
                f"{fmt(n.get('whole.service_cpu_us_per_request'), '.0f')} us = "
                f"{fmt(row.get('ms_per_request'), '+.3f')} ms",
                fmt(row.get("ms_per_request_v1"), "+.3f") + " ms",
            ))  # fmt: skip
        table(
            (
                "server",
                "us per chunk",
                "per whole completion (/api/chat)",
                "(/v1, over naive /api/chat)",
            ),
            own_rows,
            w,
        )
    base = m.get("baseline")
    same = m.get("quartchat-hypercorn")
    if base and same:
        w(
            "\n  quartchat on hypercorn / the baseline's: per chunk "
            f"{ratio(same.get('streams.cpu_us_per_chunk', 0), base.get('streams.cpu_us_per_chunk', 0)):.3f}, "
            f"per request {ratio(same.get('whole.service_cpu_us_per_request', 0), base.get('whole.service_cpu_us_per_request', 0)):.3f}, "
            f"req/s {ratio(same.get('whole.rps', 0), base.get('whole.rps', 0)):.3f}\n"
        )
    w("\ntargets (issue 19; printed, not enforced):\n")
    for ok, name, detail in res["targets"]:
        w(f"  [{'info' if ok is None else 'met' if ok else 'MISSED'}] {name}: {detail}\n")
    w("\n")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="quartchat against its peers (see the module docstring)"
    )
    add = p.add_argument
    names = ", ".join(x.name for x in PEERS)
    add("--quick", action="store_true",
        help="check the harness (about 2 minutes): 50 streams, errors at 200, 1.5 s whole "
        "phases, 50 upstream chunks per stream")  # fmt: skip
    add("--only", default="", help=f"comma list of peers to run ({names})")
    add("--skip", default="", help="comma list of peers to leave out")
    add("--streams", type=int, default=None, help="concurrent streams for CPU and TTFC (200)")
    add("--top-streams", type=int, default=None, help="concurrent streams for errors (1000)")
    add("--whole-concurrency", type=int, default=50, help="keep-alive connections, whole phase")
    add("--whole-seconds", type=float, default=None, help="seconds per whole phase (5; 0: skip)")
    add("--repeat", type=int, default=1, help="rounds over every peer, order reversing; medians")
    add("--chunks", type=int, default=None, help="content chunks per upstream stream (200)")
    add("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    add("--service-cpu", type=int, default=0, help="core every peer is pinned to")
    add("--harness-cpu", type=int, default=1, help="core of the load generator and the upstream")
    add("--nginx", default=shutil.which("nginx") or "", help="nginx binary")
    add("--baseline-ref", default=None, metavar="REF",
        help="also quartchat of git commit REF on hypercorn (extracted into OUTDIR/baseline-<sha>)")  # fmt: skip
    add("--timeout-factor", type=float, default=3.0, help="stream timeout: nominal x this + 10 s")
    add("--top-timeout-factor", type=float, default=10.0,
        help="the same for the --top-streams phase (a peer behind is slow, not in error)")  # fmt: skip
    add("--pause", type=float, default=0.5, help="seconds of quiet between phases")
    add(
        "--log-level",
        default="INFO",
        help="quartchat's LOG_LEVEL (INFO: an access line per request)",
    )
    add("--outdir", default=str(ROOT / "artifacts" / "bench"), help="logs and baseline trees")
    add("--json", nargs="?", const="-", default=None, metavar="PATH",
        help="also write the results as JSON, to PATH or to stdout")  # fmt: skip
    args = p.parse_args(argv)
    quick = args.quick
    for key, full, fast in (
        ("streams", 200, 50),
        ("top_streams", 1000, 200),
        ("whole_seconds", 5.0, 1.5),
        ("chunks", 200, 50),
    ):
        if getattr(args, key) is None:
            setattr(args, key, fast if quick else full)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    known = {x.name for x in PEERS}
    for option in ("only", "skip"):
        chosen = [x.strip() for x in getattr(args, option).split(",") if x.strip()]
        unknown = set(chosen) - known
        if unknown:
            p.error(f"--{option}: unknown peer(s) {', '.join(sorted(unknown))}; known: {names}")
        setattr(args, option, chosen)
    # What relay_bench's Bench reads besides: no probe streams here.
    args.probes, args.probe_delay, args.probe_gap = 0, 0.0, 0.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        say("warning: one core only; the servers and the harness share it")
        args.service_cpu = args.harness_cpu = 0
    top = max(args.streams, args.top_streams, args.whole_concurrency)
    limit = raise_fd_limit(4 * top + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="peers-logs-", dir=outdir))
    data = Path(tempfile.mkdtemp(prefix="peers-bench-data-"))
    skipped: dict[str, str] = {}
    peers = []
    for peer in PEERS:
        if (args.only and peer.name not in args.only) or peer.name in args.skip:
            continue
        why = missing(peer, args)
        if why:
            if peer.kind != "baseline" or args.only:
                say(f"skipped {peer.name}: {why}")
            skipped[peer.name] = why
        else:
            peers.append(peer)

    stop_children_on_exit()
    load0 = os.getloadavg()[0]
    started = time.monotonic()
    baseline = None
    try:
        if any(p.kind == "baseline" for p in peers):
            baseline = materialise_baseline(args.baseline_ref, outdir)
        uport = free_port()
        upstream = spawn(
            "upstream", upstream_argv("bench", uport, args.chunks, args.interval),
            args.harness_cpu, child_env(), logdir,
        )  # fmt: skip
        wait_for_port(upstream, uport)
        ctx = Context(
            args, logdir, data, upstream, uport, baseline, secrets.token_urlsafe(18),
            server_setting(),
        )  # fmt: skip
        say(
            f"upstream :{uport} (cpu {args.harness_cpu}); peers on cpu {args.service_cpu}: "
            f"{', '.join(p.name for p in peers)}; fd limit {limit}; logs {logdir}"
        )
        res = on_uvloop(rounds(ctx, peers))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        return 130
    finally:
        stop_children()
        shutil.rmtree(data, ignore_errors=True)
    res["started"] = ctx.notes
    res["skipped"] = skipped
    res["loadavg"] = [load0, os.getloadavg()[0]]
    res["seconds"] = time.monotonic() - started
    res["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    res["code"] = code_version()
    res["config"] = vars(args)
    res["machine"] = machine()
    if baseline:
        res["baseline"] = {
            "ref": baseline.ref,
            "commit": baseline.commit,
            "tree": str(baseline.tree),
        }
    res["summary"] = summarise(res["rounds"])
    res["own_code"] = own_code(res["summary"])
    res["targets"] = check(res)
    print_report(res)
    say(f"took {res['seconds']:.0f} s; logs {logdir}")
    if args.json:
        write_json(res, args.json)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
