#!/usr/bin/env python
"""Load benchmark of the streaming relay: quartchat (hypercorn, uvloop, one process) vs. its upstream.

    .venv/bin/python bench/relay_bench.py                      # default run, about a minute
    .venv/bin/python bench/relay_bench.py --levels 50,200 --json out.json
    .venv/bin/python bench/relay_bench.py --profile 500        # + a py-spy profile at 500 streams

Three processes, all on 127.0.0.1:

* the fake upstream (`python -m tests.fake_upstream`, 200 chunks 20 ms apart by default),
* the service (`python -m quartchat`), pinned to one core (`--service-cpu`, default 0),
* this script: the load generator (raw asyncio protocols under uvloop, the cheapest client
  there is in Python) pinned to the other core (`--harness-cpu`, default 1) with the upstream.

For each concurrency level N it opens N streams at once straight to the upstream (the baseline),
then N streams at once through `POST /api/chat/stream`, and reports time-to-first-chunk, errors,
stream duration, the service's CPU time per relayed chunk (utime+stime from /proc/<pid>/stat)
and its memory. Then whole (non-streamed) requests per second through `POST /api/chat` at a fixed
concurrency over keep-alive connections, against the same rate straight to the upstream.

This is a script, not a test: it prints a table (and `--json`), and its exit status is 0 unless
the harness itself failed. Targets are checked and marked in the table, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # all traffic stays on loopback
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Targets from the performance brief; shown next to the figures.
TARGET_US_PER_CHUNK = 40.0
TARGET_ADDED_TTFC_P99_MS_AT_200 = 10.0
TARGET_PACE_LEVEL = 500
TARGET_RPS = 1000.0


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


class Child:
    """A process we started, its CPU time and memory read from /proc."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log

    def cpu_seconds(self) -> float:
        """utime + stime of the process (all its threads), in seconds."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)  # both servers shut down cleanly on SIGINT
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


CHILDREN: list[Child] = []


def stop_children() -> None:
    while CHILDREN:
        CHILDREN.pop().stop()


def spawn(
    name: str, argv: Sequence[str], cpu: int | None, env: dict[str, str], logdir: Path
) -> Child:
    log = logdir / f"{name}.log"
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,
        )
    child = Child(name, popen, log)
    CHILDREN.append(child)
    return child


def wait_for_port(child: Child, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise SystemExit(
                f"{child.name} exited early; see {child.log}:\n{child.log.read_text()[-2000:]}"
            )
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(
        f"{child.name} did not listen on {HOST}:{port} within {timeout}s; see {child.log}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_fd_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
        except (ValueError, OSError):
            pass
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------------------------
# The load generator: one asyncio.Protocol per connection, a minimal HTTP/1.1 response reader
# --------------------------------------------------------------------------------------------


class Response(asyncio.Protocol):
    """Reads one HTTP/1.1 response at a time (Content-Length or chunked) off one connection.

    The hot path (`data_received` on a streaming body) only appends the bytes and looks at the
    last few; everything else (de-chunking, event parsing, checks) happens after the clock stops.
    """

    __slots__ = (
        "chunked",
        "clen",
        "cut",
        "done",
        "first_re",
        "head_len",
        "parts",
        "scan",
        "size",
        "status",
        "t0",
        "t_end",
        "t_first",
        "tail",
        "transport",
    )

    def __init__(self, first_re: re.Pattern[bytes] | None = None) -> None:
        self.first_re = first_re
        self.transport: asyncio.Transport | None = None
        self.reset()

    def reset(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.status = 0
        self.head_len = -1
        self.chunked = False
        self.clen = -1
        self.t0 = time.perf_counter()
        self.t_first = 0.0
        self.t_end = 0.0
        self.scan = b""  # unsearched tail, for a first-chunk marker split across reads
        self.tail = b""
        self.cut = False  # the connection ended before the response did
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.head_len < 0 and not self._parse_head():
            return
        if self.first_re is not None and not self.t_first:
            text = self.scan + data if self.scan else data
            if self.first_re.search(text):
                self.t_first = time.perf_counter()
            else:
                self.scan = text[-64:]
        if self.chunked:
            tail = self.tail + data if len(data) < 7 else data
            self.tail = tail[-7:]
            if tail.endswith(b"\r\n0\r\n\r\n") or (
                self.size - self.head_len == 5 and tail.endswith(b"0\r\n\r\n")
            ):
                self._finish()
        elif self.clen >= 0 and self.size - self.head_len >= self.clen:
            self._finish()

    def eof_received(self) -> bool | None:
        if self.head_len >= 0 and not self.chunked and self.clen < 0:
            self._finish()  # a body delimited by the end of the connection
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.cut = True
            self.done.set_result(None)

    # -----------------------------------------------------------------------------------------

    def _parse_head(self) -> bool:
        raw = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        self.parts = [raw]
        head = raw[:end].decode("latin-1").lower()
        self.head_len = end + 4
        self.status = int(head.split(" ", 2)[1])
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "transfer-encoding" and "chunked" in value:
                self.chunked = True
            elif name == "content-length":
                self.clen = int(value)
        return True

    def _finish(self) -> None:
        if not self.done.done():
            self.t_end = time.perf_counter()
            self.done.set_result(None)

    def body(self) -> bytes:
        raw = b"".join(self.parts)[self.head_len :] if self.head_len >= 0 else b""
        return dechunk(raw) if self.chunked else raw


def dechunk(raw: bytes) -> bytes:
    out, pos = [], 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(raw[pos:eol].split(b";")[0], 16)
        if size == 0:
            break
        out.append(raw[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
    return b"".join(out)


def http_post(path: str, port: int, body: bytes, *, close: bool) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: */*\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode() + body


@dataclass
class Target:
    """One endpoint under test: where to send what, and how to judge a finished stream."""

    name: str
    port: int
    stream_request: bytes
    whole_request: bytes
    first_re: re.Pattern[bytes]
    judge: Callable[[int, bytes], tuple[str | None, int]]  # (error or None, content chunks)


def judge_service_stream(status: int, body: bytes, expected: str) -> tuple[str | None, int]:
    if status != 200:
        return f"HTTP {status}", 0
    chunks, done = 0, None
    for block in body.split(b"\n\n"):
        if block.startswith(b"event: chunk\n"):
            chunks += 1
        elif block.startswith(b"event: error\n"):
            return "error event", chunks
        elif block.startswith(b"event: done\n"):
            done = json.loads(block.partition(b"\ndata: ")[2])
    if done is None:
        return "no done event", chunks
    if done["message"]["content"] != expected:
        return "wrong content", chunks
    return None, chunks


def judge_upstream_stream(status: int, body: bytes, expected: str) -> tuple[str | None, int]:
    if status != 200:
        return f"HTTP {status}", 0
    text, chunks, finished = [], 0, False
    for block in body.split(b"\n\n"):
        data = block.partition(b"data: ")[2]
        if not data:
            continue
        if data == b"[DONE]":
            finished = True
            continue
        for choice in json.loads(data).get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                chunks += 1
                text.append(content)
    if not finished:
        return "no [DONE]", chunks
    if "".join(text) != expected:
        return "wrong content", chunks
    return None, chunks


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default); nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


@dataclass
class StreamPhase:
    n: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    ttfc_ms: list[float] = field(default_factory=list)
    duration_ms: list[float] = field(default_factory=list)
    content_chunks: int = 0
    wall_s: float = 0.0
    service_cpu_s: float = 0.0
    harness_cpu_s: float = 0.0  # load generator + upstream, both on the harness core
    upstream_cpu_s: float = 0.0
    peak_rss_kb: int = 0
    hwm_kb: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "ttfc_ms_p50": pct(self.ttfc_ms, 50),
            "ttfc_ms_p99": pct(self.ttfc_ms, 99),
            "duration_ms_p50": pct(self.duration_ms, 50),
            "duration_ms_p99": pct(self.duration_ms, 99),
            "content_chunks": self.content_chunks,
            "wall_s": self.wall_s,
            "service_cpu_s": self.service_cpu_s,
            "upstream_cpu_s": self.upstream_cpu_s,
            "harness_core_busy": self.harness_cpu_s / self.wall_s if self.wall_s else float("nan"),
            "peak_rss_kb": self.peak_rss_kb,
            "vmhwm_kb": self.hwm_kb,
        }


class Bench:
    def __init__(
        self, args: argparse.Namespace, service: Child, upstream: Child, targets: dict[str, Target]
    ) -> None:
        self.args = args
        self.service = service
        self.upstream = upstream
        self.targets = targets
        self.loop = asyncio.get_running_loop()
        self.me_cpu = lambda: sum(os.times()[:2])

    async def one_stream(
        self, target: Target, phase: StreamPhase, deadline: float
    ) -> Response | None:
        proto = Response(target.first_re)
        try:
            proto.t0 = time.perf_counter()
            transport, _ = await self.loop.create_connection(lambda: proto, HOST, target.port)
            transport.write(target.stream_request)
            await asyncio.wait_for(
                asyncio.shield(proto.done), max(0.1, deadline - time.monotonic())
            )
            if not proto.cut:
                return proto
            kind = "cut mid-stream" if proto.status else "closed before response"
        except TimeoutError:
            kind = "timeout"
        except OSError as exc:
            kind = f"connect: {type(exc).__name__}"
        finally:
            if proto.transport is not None:
                proto.transport.close()
        phase.errors[kind] = phase.errors.get(kind, 0) + 1
        return None

    async def stream_phase(self, target: Target, n: int, *, measure_service: bool) -> StreamPhase:
        phase = StreamPhase(n)
        timeout = self.args.chunks * self.args.interval * self.args.timeout_factor + 10
        sampling = True
        peak = 0

        async def sample_rss() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, self.service.status_kb("VmRSS"))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_rss()) if measure_service else None
        svc0, up0, me0 = self.service.cpu_seconds(), self.upstream.cpu_seconds(), self.me_cpu()
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        results = await asyncio.gather(
            *(self.one_stream(target, phase, deadline) for _ in range(n))
        )
        phase.wall_s = time.perf_counter() - t0
        phase.service_cpu_s = self.service.cpu_seconds() - svc0
        phase.upstream_cpu_s = self.upstream.cpu_seconds() - up0
        phase.harness_cpu_s = phase.upstream_cpu_s + self.me_cpu() - me0
        sampling = False
        if sampler:
            await sampler
            phase.peak_rss_kb = peak
            phase.hwm_kb = self.service.status_kb("VmHWM")
        # The clock has stopped: now judge what arrived.
        for proto in results:
            if proto is None:
                continue
            error, chunks = target.judge(proto.status, proto.body())
            phase.content_chunks += chunks
            if error is None and not proto.t_first:
                error = "no first chunk"
            if error:
                phase.errors[error] = phase.errors.get(error, 0) + 1
                continue
            phase.ok += 1
            phase.ttfc_ms.append((proto.t_first - proto.t0) * 1000)
            phase.duration_ms.append((proto.t_end - proto.t0) * 1000)
        return phase

    async def whole_phase(self, target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
        """Non-streamed requests over `concurrency` keep-alive connections for `seconds`."""
        counts: Counter[str] = Counter()
        latencies: list[float] = []
        measuring = False
        stop_at = 0.0

        async def worker() -> None:
            proto = Response()
            transport, _ = await self.loop.create_connection(lambda: proto, HOST, target.port)
            try:
                while time.perf_counter() < stop_at:
                    proto.reset()
                    transport.write(target.whole_request)
                    await asyncio.wait_for(asyncio.shield(proto.done), 10)
                    if proto.cut:
                        counts["connection lost"] += 1
                        break
                    if not measuring:
                        continue
                    body = proto.body()
                    if proto.status == 200 and b'"content"' in body:
                        counts["ok"] += 1
                        latencies.append((proto.t_end - proto.t0) * 1000)
                    else:
                        counts[f"HTTP {proto.status}"] += 1
                    if proto.transport is None or proto.transport.is_closing():
                        break
            except (OSError, TimeoutError) as exc:
                counts[type(exc).__name__] += 1
            finally:
                transport.close()

        warmup = min(1.0, seconds / 4)
        stop_at = time.perf_counter() + warmup + seconds
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        svc0, up0, me0 = self.service.cpu_seconds(), self.upstream.cpu_seconds(), self.me_cpu()
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        svc, up = self.service.cpu_seconds() - svc0, self.upstream.cpu_seconds() - up0
        harness = up + self.me_cpu() - me0
        ok = counts.pop("ok", 0)
        return {
            "concurrency": concurrency,
            "seconds": wall,
            "requests": ok,
            "errors": sum(counts.values()),
            "error_kinds": dict(counts),
            "rps": ok / wall if wall else float("nan"),
            "latency_ms_p50": pct(latencies, 50),
            "latency_ms_p99": pct(latencies, 99),
            "service_cpu_us_per_request": svc / ok * 1e6 if ok else float("nan"),
            "service_core_busy": svc / wall if wall else float("nan"),
            "harness_core_busy": harness / wall if wall else float("nan"),
        }


# --------------------------------------------------------------------------------------------
# py-spy (optional): profile the service during one extra stream phase
# --------------------------------------------------------------------------------------------


def top_functions(raw: Path, limit: int) -> tuple[int, list[tuple[str, int, int]]]:
    """From py-spy's collapsed stacks: (samples, [(function, self samples, total samples)])."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        samples += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # drop line numbers
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    rows = [(f, own[f], total[f]) for f, _ in own.most_common(limit)]
    return samples, rows


async def profile_phase(
    bench: Bench, n: int, outdir: Path, rate: int, native: bool
) -> dict[str, Any]:
    outdir.mkdir(parents=True, exist_ok=True)
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    raw = outdir / f"service-{n}.collapsed.txt"
    speedscope = outdir / f"service-{n}.speedscope.json"
    outputs = {}
    for fmt, path in (("raw", raw), ("speedscope", speedscope)):
        # One recorder per format, one after the other: only one may attach at a time.
        argv = [
            str(pyspy),
            "record",
            "--pid",
            str(bench.service.pid),
            "--rate",
            str(rate),
            "--format",
            fmt,
            "-o",
            str(path),
            "--nonblocking",
        ]
        if native:
            argv.append("--native")
        with open(outdir / "py-spy.log", "ab") as log:
            spy = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.sched_setaffinity(0, {bench.args.harness_cpu}),
            )
        await asyncio.sleep(1.0)  # let it attach
        phase = await bench.stream_phase(bench.targets["service"], n, measure_service=True)
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
        outputs[fmt] = {"path": str(path), "phase": phase.summary()}
        await asyncio.sleep(0.5)
    samples, rows = top_functions(raw, 25)
    return {
        "n": n,
        "rate_hz": rate,
        "samples": samples,
        "raw": str(raw),
        "speedscope": str(speedscope),
        "top_self": [
            {"function": f, "self_pct": 100 * s / samples, "total_pct": 100 * t / samples}
            for f, s, t in rows
        ],
        "phase_during_profile": outputs["raw"]["phase"],
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="quartchat relay load benchmark (see module docstring)")
    p.add_argument(
        "--levels", default="50,200,500,1000", help="concurrent streams per level (comma list)"
    )
    p.add_argument("--chunks", type=int, default=200, help="content chunks per upstream stream")
    p.add_argument("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    p.add_argument(
        "--whole-concurrency", type=int, default=50, help="concurrency of the non-streamed test"
    )
    p.add_argument(
        "--whole-seconds", type=float, default=5.0, help="seconds per non-streamed run (0: skip)"
    )
    p.add_argument("--service-cpu", type=int, default=0, help="core the service is pinned to")
    p.add_argument(
        "--harness-cpu", type=int, default=1, help="core of the load generator and upstream"
    )
    p.add_argument(
        "--timeout-factor", type=float, default=3.0, help="stream timeout: nominal * this + 10 s"
    )
    p.add_argument("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    p.add_argument(
        "--log-level",
        default="INFO",
        help="the service's LOG_LEVEL (its access log goes to a file)",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the levels, profile the service with py-spy during one N-stream phase",
    )
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    p.add_argument(
        "--outdir", default=str(ROOT / "artifacts" / "bench"), help="logs and profiles go here"
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also write the results as JSON (to PATH, or stdout)",
    )
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    return args


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


def level_row(args: argparse.Namespace, svc: StreamPhase, base: StreamPhase) -> dict[str, Any]:
    s, b = svc.summary(), base.summary()
    chunks = svc.content_chunks
    return {
        "n": svc.n,
        "service": s,
        "direct": b,
        "errors": s["errors"],
        "direct_errors": b["errors"],
        "added_ttfc_ms_p50": s["ttfc_ms_p50"] - b["ttfc_ms_p50"],
        "added_ttfc_ms_p99": s["ttfc_ms_p99"] - b["ttfc_ms_p99"],
        "nominal_ms": args.chunks * args.interval * 1000,
        "pace_ratio_p99": s["duration_ms_p99"] / b["duration_ms_p99"]
        if b["duration_ms_p99"]
        else float("nan"),
        "service_cpu_us_per_chunk": svc.service_cpu_s / chunks * 1e6 if chunks else float("nan"),
        "service_core_busy": svc.service_cpu_s / svc.wall_s if svc.wall_s else float("nan"),
        "peak_rss_mb": svc.peak_rss_kb / 1024,
        "vmhwm_mb": svc.hwm_kb / 1024,
    }


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_table(res: dict[str, Any], out: Any = sys.stdout) -> None:
    a = res["config"]
    w = out.write
    w(
        f"\nquartchat relay bench: {a['chunks']} chunks x {a['interval'] * 1000:g} ms "
        f"(nominal {a['chunks'] * a['interval']:g} s), service on cpu {a['service_cpu']}, "
        f"harness on cpu {a['harness_cpu']}; {res['machine']['nproc']} x {res['machine']['cpu_model']}\n\n"
    )
    hdr = (
        "streams",
        "errors",
        "direct err",
        "TTFC p50 svc/dir",
        "added TTFC p50",
        "added TTFC p99",
        "dur p99 svc/dir",
        "pace",
        "svc CPU",
        "us/chunk",
        "peak RSS",
        "harness",
    )
    rows = []
    for r in res["levels"]:
        s, d = r["service"], r["direct"]
        rows.append(
            (
                str(r["n"]),
                str(r["errors"])
                + (
                    ""
                    if not r["errors"]
                    else " " + ",".join(f"{k}:{v}" for k, v in s["error_kinds"].items())
                ),
                str(r["direct_errors"]),
                f"{s['ttfc_ms_p50']:.1f}/{d['ttfc_ms_p50']:.1f} ms",
                f"{r['added_ttfc_ms_p50']:+.1f} ms",
                f"{r['added_ttfc_ms_p99']:+.1f} ms",
                f"{s['duration_ms_p99'] / 1000:.2f}/{d['duration_ms_p99'] / 1000:.2f} s",
                f"{r['pace_ratio_p99']:.3f}",
                f"{100 * r['service_core_busy']:.0f}%",
                f"{r['service_cpu_us_per_chunk']:.1f}",
                f"{r['peak_rss_mb']:.0f} MB",
                f"{100 * s['harness_core_busy']:.0f}%",
            )
        )
    widths = (
        [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(hdr)]
        if rows
        else [len(h) for h in hdr]
    )
    line = lambda cells: "  ".join(c.rjust(widths[i]) for i, c in enumerate(cells)) + "\n"  # noqa: E731
    w(line(hdr))
    w(line(["-" * x for x in widths]))
    for row in rows:
        w(line(row))
    w(
        "\n(pace = service p99 stream duration / direct p99; svc CPU = service core busy during the phase;\n"
        " harness = load generator + upstream busy on their core, near 100% means the harness limits the run)\n"
    )
    wh = res.get("whole")
    if wh:
        s, d = wh["service"], wh["direct"]
        w(
            f"\nnon-streamed POST /api/chat, {s['concurrency']} keep-alive connections, {s['seconds']:.1f} s:\n"
        )
        w(
            f"  service {s['rps']:8.0f} req/s  (p50 {s['latency_ms_p50']:.1f} ms, p99 {s['latency_ms_p99']:.1f} ms, "
            f"{s['service_cpu_us_per_request']:.0f} us CPU/req, svc core {100 * s['service_core_busy']:.0f}%, "
            f"errors {s['errors']})\n"
        )
        w(
            f"  direct  {d['rps']:8.0f} req/s  (p50 {d['latency_ms_p50']:.1f} ms, p99 {d['latency_ms_p99']:.1f} ms, "
            f"harness core {100 * d['harness_core_busy']:.0f}%, errors {d['errors']})\n"
        )
        w(f"  ratio service/direct {wh['ratio']:.2f}\n")
    t = res["targets"]
    w("\ntargets:\n")
    for name, (ok, detail) in t.items():
        w(f"  [{mark(ok) if ok is not None else 'n/a'}] {name}: {detail}\n")
    prof = res.get("profile")
    if prof:
        w(
            f"\npy-spy, {prof['n']} streams, {prof['samples']} samples at {prof['rate_hz']} Hz "
            f"(busy samples only); collapsed stacks: {prof['raw']}\n"
        )
        w(f"  {'self%':>6} {'total%':>6}  function\n")
        for row in prof["top_self"][:15]:
            w(f"  {row['self_pct']:6.1f} {row['total_pct']:6.1f}  {row['function']}\n")
    w("\n")


def check_targets(res: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    by_n = {r["n"]: r for r in res["levels"]}
    top = max(by_n) if by_n else 0
    t: dict[str, tuple[bool | None, str]] = {}
    if top:
        r = by_n[top]
        t[f"zero errors at {top} streams"] = (r["errors"] == 0, f"{r['errors']} errors")
    cpus = {n: r["service_cpu_us_per_chunk"] for n, r in by_n.items()}
    if cpus:
        worst = max(cpus.values())
        t[f"<= {TARGET_US_PER_CHUNK:g} us CPU per chunk"] = (
            worst <= TARGET_US_PER_CHUNK,
            ", ".join(f"{n}: {v:.1f}" for n, v in sorted(cpus.items())),
        )
    if TARGET_PACE_LEVEL in by_n:
        r = by_n[TARGET_PACE_LEVEL]
        t[f"keeps pace at {TARGET_PACE_LEVEL} streams"] = (
            r["pace_ratio_p99"] <= 1.05 and r["errors"] == 0,
            f"p99 duration {r['service']['duration_ms_p99'] / 1000:.2f} s vs direct "
            f"{r['direct']['duration_ms_p99'] / 1000:.2f} s (ratio {r['pace_ratio_p99']:.3f}, limit 1.05), "
            f"service core {100 * r['service_core_busy']:.0f}%",
        )
    if 200 in by_n:
        r = by_n[200]
        t[f"added TTFC p99 <= {TARGET_ADDED_TTFC_P99_MS_AT_200:g} ms at 200"] = (
            r["added_ttfc_ms_p99"] <= TARGET_ADDED_TTFC_P99_MS_AT_200,
            f"{r['added_ttfc_ms_p99']:+.1f} ms",
        )
    wh = res.get("whole")
    if wh:
        t[f">= {TARGET_RPS:g} req/s non-streamed at {wh['service']['concurrency']}"] = (
            wh["service"]["rps"] >= TARGET_RPS,
            f"{wh['service']['rps']:.0f} req/s",
        )
    return t


async def run(
    args: argparse.Namespace, service: Child, upstream: Child, sport: int, uport: int
) -> dict[str, Any]:
    expected = "tok" * args.chunks
    chat = {"messages": [{"role": "user", "content": "benchmark"}]}
    body = json.dumps(chat).encode()
    direct_stream = json.dumps(
        {**chat, "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}}
    ).encode()
    direct_whole = json.dumps({**chat, "model": "gpt-4o-mini", "stream": False}).encode()
    targets = {
        "service": Target(
            "service",
            sport,
            http_post("/api/chat/stream", sport, body, close=True),
            http_post("/api/chat", sport, body, close=False),
            re.compile(rb"event: chunk\n"),
            lambda status, b: judge_service_stream(status, b, expected),
        ),
        "direct": Target(
            "direct",
            uport,
            http_post("/v1/chat/completions", uport, direct_stream, close=True),
            http_post("/v1/chat/completions", uport, direct_whole, close=False),
            re.compile(rb'"content": ?"[^"]'),
            lambda status, b: judge_upstream_stream(status, b, expected),
        ),
    }
    bench = Bench(args, service, upstream, targets)
    # Warm-up: imports, the upstream connection pool, code paths.
    warm = await bench.stream_phase(targets["service"], 20, measure_service=False)
    if warm.errors:
        raise SystemExit(f"warm-up failed: {warm.errors}; see {service.log}")
    levels = []
    for n in args.levels:
        await asyncio.sleep(args.pause)
        base = await bench.stream_phase(targets["direct"], n, measure_service=True)
        await asyncio.sleep(args.pause)
        svc = await bench.stream_phase(targets["service"], n, measure_service=True)
        row = level_row(args, svc, base)
        levels.append(row)
        print(
            f"  {n:5d} streams: errors {row['errors']}/{row['direct_errors']}, "
            f"added TTFC p99 {row['added_ttfc_ms_p99']:+.1f} ms, pace {row['pace_ratio_p99']:.3f}, "
            f"{row['service_cpu_us_per_chunk']:.1f} us/chunk, svc core {100 * row['service_core_busy']:.0f}%, "
            f"harness {100 * svc.summary()['harness_core_busy']:.0f}%",
            file=sys.stderr,
            flush=True,
        )
    res: dict[str, Any] = {"levels": levels}
    if args.whole_seconds > 0:
        await asyncio.sleep(args.pause)
        d = await bench.whole_phase(targets["direct"], args.whole_concurrency, args.whole_seconds)
        await asyncio.sleep(args.pause)
        s = await bench.whole_phase(targets["service"], args.whole_concurrency, args.whole_seconds)
        res["whole"] = {
            "service": s,
            "direct": d,
            "ratio": s["rps"] / d["rps"] if d["rps"] else float("nan"),
        }
        print(
            f"  whole: {s['rps']:.0f} req/s via service, {d['rps']:.0f} direct",
            file=sys.stderr,
            flush=True,
        )
    if args.profile:
        await asyncio.sleep(args.pause)
        print(
            f"  profiling the service at {args.profile} streams with py-spy ...",
            file=sys.stderr,
            flush=True,
        )
        res["profile"] = await profile_phase(
            bench, args.profile, Path(args.outdir), args.profile_rate, args.profile_native
        )
    res["service_vmhwm_mb"] = service.status_kb("VmHWM") / 1024
    return res


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        print("warning: one core only; service and harness share it", file=sys.stderr)
        args.service_cpu = args.harness_cpu = 0
    top = max(args.levels, default=0)
    limit = raise_fd_limit(4 * max(top, args.whole_concurrency) + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="logs-", dir=outdir))

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    import atexit

    atexit.register(stop_children)
    uport, sport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "APP_"))}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    try:
        upstream = spawn(
            "upstream",
            [
                sys.executable,
                "-m",
                "tests.fake_upstream",
                "--host",
                HOST,
                "--port",
                str(uport),
                "--chunks",
                str(args.chunks),
                "--interval",
                str(args.interval),
            ],
            args.harness_cpu,
            env,
            logdir,
        )
        service_env = {
            **env,
            "OPENAI_API_BASE": f"http://{HOST}:{uport}/v1",
            "APP_HOST": HOST,
            "APP_PORT": str(sport),
            "LOG_LEVEL": args.log_level,
        }
        if top > 1000:  # the service's default pool holds 1000 upstream connections
            service_env["UPSTREAM_MAX_CONNECTIONS"] = str(top + 100)
        service = spawn(
            "service", [sys.executable, "-m", "quartchat"], args.service_cpu, service_env, logdir
        )
        wait_for_port(upstream, uport)
        wait_for_port(service, sport)
        print(
            f"upstream pid {upstream.pid} :{uport} (cpu {args.harness_cpu}), service pid {service.pid} "
            f":{sport} (cpu {args.service_cpu}), fd limit {limit}, logs in {logdir}",
            file=sys.stderr,
        )
        try:
            import uvloop
        except ImportError:
            res = asyncio.run(run(args, service, upstream, sport, uport))
        else:
            res = uvloop.run(run(args, service, upstream, sport, uport))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
    res["config"] = {k: v for k, v in vars(args).items()}
    res["machine"] = machine()
    res["targets"] = check_targets(res)
    print_table(res)
    if args.json:
        text = json.dumps(res, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
