#!/usr/bin/env python
"""Load benchmark of the streaming relay: quartchat (hypercorn, one process) vs. its upstream.

    .venv/bin/python bench/relay_bench.py                      # default run, about 1.5 minutes
    .venv/bin/python bench/relay_bench.py --levels 50,200 --json out.json
    .venv/bin/python bench/relay_bench.py --profile 500        # + py-spy profiles of the service
    .venv/bin/python bench/relay_bench.py --baseline-ref <ref> --levels 200,500,1000 --repeat 3

Three processes, all on 127.0.0.1:

* the fake upstream: `python -m bench.upstream` (tests/fake_upstream.py's server with a cheap,
  fixed-schedule delivery of its default reply; `--upstream tests` runs the fixture itself),
  200 chunks 20 ms apart by default, pinned to the harness core;
* the service, `python -m quartchat` as deployed but without accounts (`AUTH_MODE=none`, so the
  relay is measured alone; bench/accounts_bench.py measures what accounts add), with a temporary
  `DATA_DIR` of its own, pinned to its own core;
* this script, the load generator (raw asyncio protocols under uvloop: parsing is deferred until
  the clock stops, so it costs a few microseconds per read), pinned to the harness core.

For each concurrency level N it opens N streams at once straight to the upstream (the baseline),
then N streams at once through `POST /api/chat/stream`, and reports time-to-first-chunk, errors,
stream duration, the service's CPU time per relayed upstream chunk (utime+stime of the service
from /proc/<pid>/stat over the phase) and its memory. Then whole (non-streamed) requests per
second through `POST /api/chat` at a fixed concurrency over keep-alive connections, against the
same straight to the upstream.

With `--baseline-ref REF` the tree of that commit is extracted (`git archive`) into
artifacts/bench/baseline-<sha>/ and served as a second service (same interpreter, same env, same
core, same fake upstream; PYTHONPATH and cwd point at that tree, and the script checks which
`quartchat/__init__.py` each service imported). Every phase then runs for both services, one after
the other in an order that alternates from level to level and run to run (`--repeat N`), so a
machine whose speed drifts slows both alike; a table of ratios (working tree / baseline, medians
over the runs) follows the figures.

This is a script, not a test: it prints a table (and `--json`); it exits 0 unless the harness
itself failed. The targets are checked and marked in the output, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # all traffic stays on loopback
CLK_TCK = os.sysconf("SC_CLK_TCK")
WORD = "tok"  # what every content chunk of the fake upstream's bench reply says

# Targets of the performance brief; shown next to the figures.
TARGET_US_PER_CHUNK = 40.0
TARGET_ADDED_TTFC_P99_MS = (200, 10.0)  # at 200 streams
TARGET_PACE_LEVEL = 500
TARGET_PACE_RATIO = 1.05
TARGET_RPS = 1000.0
# What the relay redesign must hold against the relay it replaces (`--baseline-ref`).
COMPARE_CPU_LEVELS = (200, 500)
COMPARE_CPU_MAX_RATIO = 1.05
COMPARE_ERROR_LEVEL = 1000
# Printed by the service's launcher before it serves, so the script can tell whose code it runs.
IMPORTED_MARK = "relay_bench: quartchat imported from"


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


class Child:
    """A process this script started; its CPU time and memory read from /proc."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log

    def cpu_times(self) -> tuple[float, float]:
        """(utime, stime) of the whole process (all its threads), in seconds."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()  # fields[0] is field 3, `state`
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all its threads), in seconds."""
        return sum(self.cpu_times())

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
            # SIGTERM, not SIGINT: a shell that starts us in the background makes SIGINT ignored,
            # and children inherit that. hypercorn shuts down cleanly on SIGTERM.
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


CHILDREN: list[Child] = []


def stop_children_on_exit() -> None:
    """A bench's set-up: SIGTERM ends the run as Ctrl-C does, and every child it started is
    stopped on any exit."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(stop_children)


def on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop, the load generator's loop, or on asyncio's when it is missing."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def stop_children() -> None:
    while CHILDREN:
        CHILDREN.pop().stop()


def spawn(
    name: str,
    argv: Sequence[str],
    cpu: int | None,
    env: dict[str, str],
    logdir: Path,
    cwd: Path = ROOT,
) -> Child:
    log = logdir / f"{name}.log"

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        with contextlib.suppress(OSError, AttributeError):  # die with us, even if SIGKILLed
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd,
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
            tail = child.log.read_text()[-2000:]
            raise SystemExit(f"{child.name} exited early; {child.log}:\n{tail}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{child.name} did not listen on {HOST}:{port} in {timeout} s; {child.log}")


def service_argv(python: str, prelude: str, *, report: bool) -> list[str]:
    """How to start the service: `python -m quartchat`, or the same through runpy after `prelude`
    and, if `report`, after printing which quartchat package the interpreter found."""
    if not prelude and not report:
        return [python, "-m", "quartchat"]
    code = [prelude] if prelude else []
    if report:
        code.append(f"import quartchat; print({IMPORTED_MARK!r}, quartchat.__file__, flush=True)")
    # runpy is what `-m` itself uses, so this runs quartchat/__main__.py just as `-m` would,
    # wherever the package keeps its `main()`.
    code.append("import runpy; runpy.run_module('quartchat', run_name='__main__', alter_sys=True)")
    return [python, "-c", "\n".join(code)]


def write_json(result: dict[str, Any], dest: str) -> None:
    """`--json DEST`: the raw figures, to a file or (`-`) to stdout."""
    text = json.dumps(result, indent=2, default=str)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n")


def start_page_service(name: str, upstream: str, logdir: Path, tree: Path | None) -> str:
    """For the browser benches: `python -m quartchat` of `tree` (None: this checkout) without
    accounts, with a DATA_DIR of its own, in front of `upstream`; its base URL."""
    port = free_port()
    env = child_env()
    env.update(
        {
            "OPENAI_API_BASE": upstream,
            "OPENAI_API_KEY": "sk-bench-0000000000",
            "APP_HOST": HOST,
            "APP_PORT": str(port),
            "AUTH_MODE": "none",
            "DATA_DIR": tempfile.mkdtemp(prefix=f"quartchat-{name}-"),
        }
    )
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    argv = service_argv(sys.executable, "", report=True)
    child = spawn(name, argv, None, env, logdir, cwd=tree or ROOT)
    wait_for_port(child, port)
    check_imported_from(child, tree or ROOT)
    return f"http://{HOST}:{port}"


def check_imported_from(child: Child, tree: Path) -> Path:
    """The quartchat package `child` imported, which must be the one in `tree` (and its cwd `tree`).

    The editable install of the working tree is on every interpreter's path; only PYTHONPATH
    (searched first) keeps it from serving the baseline's requests with today's code.
    """
    found = None
    for line in child.log.read_text(errors="replace").splitlines():
        if line.startswith(IMPORTED_MARK):
            found = Path(line[len(IMPORTED_MARK) :].strip()).resolve()
            break
    if found is None:
        raise SystemExit(f"{child.name} did not say which quartchat it imported; see {child.log}")
    cwd = Path(os.readlink(f"/proc/{child.pid}/cwd"))
    if found != tree.resolve() / "quartchat" / "__init__.py" or cwd != tree.resolve():
        raise SystemExit(
            f"{child.name} should run the code in {tree} but imported {found} (cwd {cwd})"
        )
    return found


@dataclass
class Baseline:
    """The commit `--baseline-ref` names, extracted where its service can run from."""

    ref: str
    commit: str
    tree: Path


def materialise_baseline(ref: str, outdir: Path) -> Baseline:
    """Extract the tree of commit `ref` into outdir/baseline-<short sha>/ (kept for the next run).

    `git archive` reads the object store only: the working tree, the index and HEAD stay as they
    are, so this is safe while someone works in the checkout.
    """
    if ref.startswith("-"):
        raise SystemExit(f"--baseline-ref {ref!r}: not a git ref")

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False
        )
        if done.returncode:
            why = done.stderr.strip() or "not a commit"
            raise SystemExit(f"--baseline-ref {ref!r}: git {argv[0]}: {why}")
        return done.stdout.strip()

    commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    tree = outdir / f"baseline-{git('rev-parse', '--short', commit)}"
    stamp = tree / ".relay-bench-commit"  # written last: a tree without it is incomplete
    if stamp.is_file() and stamp.read_text().strip() == commit:
        return Baseline(ref, commit, tree)
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tree.name}.", dir=outdir))
    with subprocess.Popen(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], stdout=subprocess.PIPE
    ) as archive:
        assert archive.stdout is not None
        untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=False)
        archive.stdout.close()
    if archive.returncode or untar.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"--baseline-ref {ref!r}: git archive | tar failed")
    (tmp / stamp.name).write_text(commit + "\n")
    if tree.exists():  # an extraction that was interrupted
        shutil.rmtree(tree)
    tmp.rename(tree)
    return Baseline(ref, commit, tree)


UPSTREAM_MODULES = {"bench": "bench.upstream", "tests": "tests.fake_upstream"}


def upstream_argv(kind: str, port: int, chunks: int, interval: float) -> list[str]:
    """How to start the fake upstream (`--upstream`: "bench" or "tests") on HOST:port."""
    return [
        sys.executable, "-m", UPSTREAM_MODULES[kind], "--host", HOST, "--port", str(port),
        "--chunks", str(chunks), "--interval", str(interval),
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    """The environment of the children: this one without the service's OPENAI_* and APP_*
    settings, and with this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "APP_"))}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by the children) to at least `needed` if allowed."""
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


def core_busy(cpu: int) -> tuple[float, float]:
    """(busy, softirq) seconds of one core since boot, from /proc/stat: everything that ran
    there, not only our processes. Softirq (loopback packet delivery among it) is not charged
    to any process when the kernel accounts IRQ time separately, as this one may."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal ...
                return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK, v[6] / CLK_TCK
    return 0.0, 0.0


def listen_drops() -> int:
    """TcpExt ListenDrops of this network namespace: connection attempts dropped because an
    accept queue was full. Each costs its client a SYN retransmission (1 s, then 3 s, 7 s...)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(row.get("ListenDrops", 0))
    return 0


# --------------------------------------------------------------------------------------------
# The load generator: one asyncio.Protocol per connection, a minimal HTTP/1.1 response reader
# --------------------------------------------------------------------------------------------


class Response(asyncio.Protocol):
    """Reads one HTTP/1.1 response at a time (Content-Length or chunked) off one connection.

    The hot path, `data_received` on a streaming body, only keeps the bytes and looks at the last
    few; de-chunking, event parsing and checks happen after the clock has stopped.
    """

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


def http_post(
    path: str, port: int, body: bytes, *, close: bool, headers: Mapping[str, str] | None = None
) -> bytes:
    """A whole POST request with a JSON body; `headers` are added (a credential, say)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: */*\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode() + body


@dataclass
class Verdict:
    error: str | None
    events: int  # content-carrying events received
    chunks: int  # upstream content chunks they carried (the relay may merge several in one)


@dataclass
class Target:
    """One endpoint under test: what to send, and how to judge a finished stream."""

    name: str
    port: int
    stream_request: bytes
    whole_request: bytes
    first_re: re.Pattern[bytes]  # the first content chunk, for time-to-first-chunk
    judge: Callable[[int, bytes], Verdict]
    proc: Child  # the service whose CPU and memory a phase reports (for "direct": the idle one)


def judge_service_stream(status: int, body: bytes, expected: str) -> Verdict:
    if status != 200:
        return Verdict(f"HTTP {status}", 0, 0)
    events, chars, done = 0, 0, None
    for block in body.split(b"\n\n"):
        if block.startswith(b"id: "):  # a turn's events lead with their SSE id (runs, issue 17)
            block = block.partition(b"\n")[2]
        if block.startswith(b"event: chunk\n"):
            events += 1
            chars += len(json.loads(block.partition(b"\ndata: ")[2])["delta"])
        elif block.startswith(b"event: error\n"):
            return Verdict("error event", events, chars // len(WORD))
        elif block.startswith(b"event: done\n"):
            done = json.loads(block.partition(b"\ndata: ")[2])
    chunks = chars // len(WORD)
    if done is None:
        return Verdict("no done event", events, chunks)
    if done["message"]["content"] != expected:
        return Verdict("wrong content", events, chunks)
    return Verdict(None, events, chunks)


def judge_upstream_stream(status: int, body: bytes, expected: str) -> Verdict:
    if status != 200:
        return Verdict(f"HTTP {status}", 0, 0)
    text: list[str] = []
    finished = False
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
                text.append(content)
    if not finished:
        return Verdict("no [DONE]", len(text), len(text))
    if "".join(text) != expected:
        return Verdict("wrong content", len(text), len(text))
    return Verdict(None, len(text), len(text))


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


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dataclass
class StreamPhase:
    target: str
    n: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    ttfc_ms: list[float] = field(default_factory=list)
    duration_ms: list[float] = field(default_factory=list)
    body_ms: list[float] = field(default_factory=list)  # first chunk to end
    events: int = 0
    chunks: int = 0
    wall_s: float = 0.0
    service_cpu_s: float = 0.0
    service_sys_s: float = 0.0  # the kernel's part of service_cpu_s
    upstream_cpu_s: float = 0.0
    harness_cpu_s: float = 0.0  # load generator + upstream, both on the harness core
    probe_ttfc_ms: list[float] = field(default_factory=list)  # single streams opened mid-phase
    service_core_s: float = 0.0  # all time the service's core was busy, whoever for
    service_core_softirq_s: float = 0.0
    listen_drops: int = 0
    peak_rss_kb: int = 0
    hwm_kb: int = 0

    def error(self, kind: str, sample: str | None = None) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if sample is not None and len(self.error_samples) < 5:
            self.error_samples.append(f"{kind}: {sample}")

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "n": self.n,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "error_samples": self.error_samples,
            "ttfc_ms_p50": pct(self.ttfc_ms, 50),
            "ttfc_ms_p99": pct(self.ttfc_ms, 99),
            "ttfc_ms_max": max(self.ttfc_ms, default=float("nan")),
            "duration_ms_p50": pct(self.duration_ms, 50),
            "duration_ms_p99": pct(self.duration_ms, 99),
            "body_ms_p99": pct(self.body_ms, 99),
            "probes": len(self.probe_ttfc_ms),
            "probe_ttfc_ms_p50": pct(self.probe_ttfc_ms, 50),
            "probe_ttfc_ms_p99": pct(self.probe_ttfc_ms, 99),
            "events": self.events,
            "chunks": self.chunks,
            "wall_s": self.wall_s,
            "service_cpu_s": self.service_cpu_s,
            "service_sys_s": self.service_sys_s,
            "service_core_busy_s": self.service_core_s,
            "service_core_softirq_s": self.service_core_softirq_s,
            "upstream_cpu_s": self.upstream_cpu_s,
            "harness_core_busy": ratio(self.harness_cpu_s, self.wall_s),
            "listen_drops": self.listen_drops,
            "peak_rss_kb": self.peak_rss_kb,
            "vmhwm_kb": self.hwm_kb,
        }


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        services: Sequence[Child],
        upstream: Child,
        targets: dict[str, Target],
    ) -> None:
        self.args = args
        self.services = services
        self.service = services[0]  # the working tree's
        self.upstream = upstream
        self.targets = targets
        self.loop = asyncio.get_running_loop()

    def _busy(self) -> float:
        return sum(c.cpu_seconds() for c in (*self.services, self.upstream))

    async def settle(self, quiet: float = 0.3, limit: float = 60.0) -> None:
        """Wait until the services and the upstream are idle (leftovers of the last phase)."""
        end = time.monotonic() + limit
        before = self._busy()
        while time.monotonic() < end:
            await asyncio.sleep(quiet)
            now = self._busy()
            if now - before <= 1.5 / CLK_TCK:
                return
            before = now
        say(f"  warning: a service or the upstream is still busy after {limit:g} s")

    @staticmethod
    def my_cpu() -> float:
        t = os.times()
        return t.user + t.system

    async def one_stream(
        self, target: Target, phase: StreamPhase, deadline: float
    ) -> Response | None:
        proto = Response(target.first_re)
        kind = "?"
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
        phase.error(kind)
        return None

    async def stream_phase(self, target: Target, n: int) -> StreamPhase:
        phase = StreamPhase(target.name, n)
        timeout = self.args.chunks * self.args.interval * self.args.timeout_factor + 10
        sampling = True
        peak = 0
        proc = target.proc

        async def sample_rss() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, proc.status_kb("VmRSS"))
                await asyncio.sleep(0.05)

        async def probes() -> list[Response | None]:
            # Single streams opened one by one while the N are under way: the time to first
            # chunk a newcomer sees at this load, without the burst of N arrivals in it.
            await asyncio.sleep(self.args.probe_delay)
            tasks = []
            for _ in range(self.args.probes):
                tasks.append(asyncio.create_task(self.one_stream(target, phase, deadline)))
                await asyncio.sleep(self.args.probe_gap)
            return await asyncio.gather(*tasks)

        await self.settle()
        sampler = asyncio.create_task(sample_rss())
        drops0 = listen_drops()
        (su0, ss0), up0, me0 = proc.cpu_times(), self.upstream.cpu_seconds(), self.my_cpu()
        core0, soft0 = core_busy(self.args.service_cpu)
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        probing = asyncio.create_task(probes()) if n and self.args.probes else None
        results = await asyncio.gather(
            *(self.one_stream(target, phase, deadline) for _ in range(n))
        )
        probed = await probing if probing else []
        phase.wall_s = time.perf_counter() - t0
        su1, ss1 = proc.cpu_times()
        phase.service_cpu_s = su1 + ss1 - su0 - ss0
        phase.service_sys_s = ss1 - ss0
        core1, soft1 = core_busy(self.args.service_cpu)
        phase.service_core_s, phase.service_core_softirq_s = core1 - core0, soft1 - soft0
        phase.upstream_cpu_s = self.upstream.cpu_seconds() - up0
        phase.harness_cpu_s = phase.upstream_cpu_s + self.my_cpu() - me0
        phase.listen_drops = listen_drops() - drops0
        sampling = False
        await sampler
        phase.peak_rss_kb = peak
        phase.hwm_kb = proc.status_kb("VmHWM")
        # The clock has stopped: now judge what arrived.
        for i, proto in enumerate([*results, *probed]):
            if proto is None:
                continue
            body = proto.body()
            verdict = target.judge(proto.status, body)
            phase.events += verdict.events
            phase.chunks += verdict.chunks
            error = verdict.error
            if error is None and not proto.t_first:
                error = "no first chunk"
            if error:
                phase.error(error, repr(body[-300:]))
                continue
            if i >= len(results):
                phase.probe_ttfc_ms.append((proto.t_first - proto.t0) * 1000)
                continue
            phase.ok += 1
            phase.ttfc_ms.append((proto.t_first - proto.t0) * 1000)
            phase.duration_ms.append((proto.t_end - proto.t0) * 1000)
            phase.body_ms.append((proto.t_end - proto.t_first) * 1000)
        return phase

    async def whole_phase(self, target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
        """Non-streamed requests over `concurrency` keep-alive connections for `seconds`."""
        counts: Counter[str] = Counter()
        latencies: list[float] = []
        measuring = False
        await self.settle()
        warmup = min(1.0, seconds / 4)
        stop_at = time.perf_counter() + warmup + seconds

        async def worker() -> None:
            proto = Response()
            try:
                transport, _ = await self.loop.create_connection(lambda: proto, HOST, target.port)
            except OSError as exc:
                counts[f"connect: {type(exc).__name__}"] += 1
                return
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
                    if proto.status == 200 and b'"content"' in proto.body():
                        counts["ok"] += 1
                        latencies.append((proto.t_end - proto.t0) * 1000)
                    else:
                        counts[f"HTTP {proto.status}"] += 1
            except TimeoutError:
                counts["timeout"] += 1
            finally:
                transport.close()

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        measuring = True
        proc = target.proc
        svc0, up0, me0 = proc.cpu_seconds(), self.upstream.cpu_seconds(), self.my_cpu()
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        svc, up = proc.cpu_seconds() - svc0, self.upstream.cpu_seconds() - up0
        harness = up + self.my_cpu() - me0
        ok = counts.pop("ok", 0)
        return {
            "target": target.name,
            "concurrency": concurrency,
            "seconds": wall,
            "requests": ok,
            "errors": sum(counts.values()),
            "error_kinds": dict(counts),
            "rps": ratio(ok, wall),
            "latency_ms_p50": pct(latencies, 50),
            "latency_ms_p99": pct(latencies, 99),
            "service_cpu_us_per_request": ratio(svc, ok) * 1e6,
            "service_core_busy": ratio(svc, wall),
            "harness_core_busy": ratio(harness, wall),
        }


# --------------------------------------------------------------------------------------------
# py-spy (optional): profile the service during extra phases, after the measured ones
# --------------------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _where(path: str) -> str:
    """A frame's file as a package name: quartchat, hypercorn, aiohttp, asyncio, uuid, ...

    py-spy prints paths relative to their sys.path entry: `aiohttp/streams.py`, `uuid.py`.
    """
    path = path.split("site-packages/", 1)[-1].lstrip("<").removeprefix("frozen ")
    return path.split("/", 1)[0].removesuffix(".py").removesuffix(">") or "?"


def analyze_profile(raw: Path, limit: int = 20) -> dict[str, Any]:
    """py-spy's collapsed stacks -> top functions by self and by total time, and time by package."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        frames = [
            f for f in stack.split(";") if not f.startswith(("process ", "thread ")) and f.strip()
        ]
        if not frames:
            continue
        names = []
        for f in frames:
            m = _FRAME.match(f)
            names.append(f"{m['func']} ({m['file']})" if m else f)
        leaf = names[-1]
        own[leaf] += count
        m = _FRAME.match(frames[-1])
        by_package[_where(m["file"]) if m else "?"] += count
        for name in set(names):
            total[name] += count

    def pct_of(x: int) -> float:
        return round(100 * x / samples, 1) if samples else float("nan")

    def short(name: str) -> str:
        m = re.match(r"^(.*) \((.*)\)$", name)
        if not m:
            return name
        path = m[2]
        for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
            path = path.split(marker, 1)[-1]
        return f"{m[1]} ({path})"

    return {
        "samples": samples,
        "top_self": [
            {"function": short(f), "self_pct": pct_of(s), "total_pct": pct_of(total[f])}
            for f, s in own.most_common(limit)
        ],
        "top_total": [
            {"function": short(f), "total_pct": pct_of(t), "self_pct": pct_of(own[f])}
            for f, t in total.most_common(limit)
        ],
        "self_by_package": {k: pct_of(v) for k, v in by_package.most_common()},
    }


def start_recorder(argv: list[str], log: Path, cpu: int) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )


async def profiled(bench: Bench, name: str, outdir: Path, run: Callable[[], Any]) -> dict[str, Any]:
    """Run `run()` while py-spy records the service; return the analysis."""
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    raw = outdir / f"{name}.collapsed.txt"
    argv = [
        str(pyspy), "record", "--pid", str(bench.service.pid), "--rate", str(bench.args.profile_rate),
        "--format", "raw", "-o", str(raw), "--gil",
    ]  # fmt: skip
    if bench.args.profile_native:
        argv.append("--native")
    spy = start_recorder(argv, outdir / "py-spy.log", bench.args.harness_cpu)
    try:
        await asyncio.sleep(1.0)  # attach
        result = await run()
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
    if not raw.exists():
        raise SystemExit(f"py-spy wrote nothing; see {outdir / 'py-spy.log'}")
    return {"collapsed_stacks": str(raw), "run": result, **analyze_profile(raw)}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def level_row(args: argparse.Namespace, svc: StreamPhase, base: StreamPhase) -> dict[str, Any]:
    s, b = svc.summary(), base.summary()
    return {
        "n": svc.n,
        "service": s,
        "direct": b,
        "errors": s["errors"],
        "direct_errors": b["errors"],
        "added_ttfc_ms_p50": s["ttfc_ms_p50"] - b["ttfc_ms_p50"],
        "added_ttfc_ms_p99": s["ttfc_ms_p99"] - b["ttfc_ms_p99"],
        "probe_added_ttfc_ms_p50": s["probe_ttfc_ms_p50"] - b["probe_ttfc_ms_p50"],
        "probe_added_ttfc_ms_p99": s["probe_ttfc_ms_p99"] - b["probe_ttfc_ms_p99"],
        "nominal_ms": args.chunks * args.interval * 1000,
        "pace_ratio_p99": ratio(s["duration_ms_p99"], b["duration_ms_p99"]),
        "body_pace_ratio_p99": ratio(s["body_ms_p99"], b["body_ms_p99"]),
        "chunks_per_event": ratio(svc.chunks, svc.events),
        "service_cpu_us_per_chunk": ratio(svc.service_cpu_s, svc.chunks) * 1e6,
        "service_core_busy": ratio(svc.service_cpu_s, svc.wall_s),
        "service_sys_share": ratio(svc.service_sys_s, svc.service_cpu_s),
        # Busy time of the service's core that is not the service's: softirq (packets), others.
        "service_core_other_busy": ratio(svc.service_core_s - svc.service_cpu_s, svc.wall_s),
        "service_core_softirq_busy": ratio(svc.service_core_softirq_s, svc.wall_s),
        "peak_rss_mb": svc.peak_rss_kb / 1024,
        "vmhwm_mb": svc.hwm_kb / 1024,
    }


def check_targets(res: dict[str, Any]) -> dict[str, list[Any]]:
    by_n = {r["n"]: r for r in res["levels"]}
    t: dict[str, list[Any]] = {}
    if by_n:
        top = max(by_n)
        r = by_n[top]
        t[f"zero errors at {top} streams"] = [r["errors"] == 0, f"{r['errors']} errors"]
        cpus = {n: r["service_cpu_us_per_chunk"] for n, r in sorted(by_n.items())}
        t[f"<= {TARGET_US_PER_CHUNK:g} us service CPU per chunk"] = [
            max(cpus.values()) <= TARGET_US_PER_CHUNK,
            ", ".join(f"{n}: {v:.1f}" for n, v in cpus.items()),
        ]
    if TARGET_PACE_LEVEL in by_n:
        r = by_n[TARGET_PACE_LEVEL]
        t[f"keeps pace at {TARGET_PACE_LEVEL} streams"] = [
            r["pace_ratio_p99"] <= TARGET_PACE_RATIO and r["errors"] == 0,
            f"p99 duration {r['service']['duration_ms_p99'] / 1000:.2f} s vs "
            f"{r['direct']['duration_ms_p99'] / 1000:.2f} s direct, ratio {r['pace_ratio_p99']:.3f} "
            f"(limit {TARGET_PACE_RATIO}); service core {100 * r['service_core_busy']:.0f}% busy",
        ]
    n, limit = TARGET_ADDED_TTFC_P99_MS
    if n in by_n:
        r = by_n[n]
        t[f"added TTFC p99 <= {limit:g} ms at {n} streams"] = [
            r["added_ttfc_ms_p99"] <= limit,
            f"{r['added_ttfc_ms_p99']:+.1f} ms for {n} opened at once (p50 "
            f"{r['added_ttfc_ms_p50']:+.1f} ms); {r['probe_added_ttfc_ms_p99']:+.1f} ms p99 for "
            f"single streams opened while they run",
        ]
    wh = res.get("whole")
    if wh:
        s = wh["service"]
        t[f">= {TARGET_RPS:g} non-streamed req/s at concurrency {s['concurrency']}"] = [
            s["rps"] >= TARGET_RPS and s["errors"] == 0,
            f"{s['rps']:.0f} req/s, {s['errors']} errors",
        ]
    return t


def compare(res: dict[str, Any]) -> dict[str, Any]:
    """The working tree against the baseline: medians over the runs, and their ratios."""
    base = res["baseline"]

    def med(rows: Sequence[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    levels = []
    for n in dict.fromkeys(r["n"] for r in res["levels"]):
        cur = [r for r in res["levels"] if r["n"] == n]
        old = [r for r in base["levels"] if r["n"] == n]
        cpu_c, cpu_b = med(cur, "service_cpu_us_per_chunk"), med(old, "service_cpu_us_per_chunk")
        ttfc_c, ttfc_b = med(cur, "added_ttfc_ms_p99"), med(old, "added_ttfc_ms_p99")
        levels.append({
            "n": n,
            "runs": len(cur),
            "cpu_us_per_chunk": {
                "current": cpu_c, "baseline": cpu_b, "ratio": ratio(cpu_c, cpu_b),
                "current_runs": [r["service_cpu_us_per_chunk"] for r in cur],
                "baseline_runs": [r["service_cpu_us_per_chunk"] for r in old],
            },
            "errors": {
                "current": sum(r["errors"] for r in cur),
                "baseline": sum(r["errors"] for r in old),
                "direct": sum(r["direct_errors"] for r in cur),  # one direct phase per run
            },
            "pace_ratio_p99": {
                "current": med(cur, "pace_ratio_p99"), "baseline": med(old, "pace_ratio_p99"),
            },
            "added_ttfc_ms_p99": {"current": ttfc_c, "baseline": ttfc_b, "delta": ttfc_c - ttfc_b},
            "chunks_per_event": {
                "current": med(cur, "chunks_per_event"), "baseline": med(old, "chunks_per_event"),
            },
        })  # fmt: skip
    out: dict[str, Any] = {"levels": levels}
    if res.get("whole") and base.get("whole"):
        cur = [r["service"] for r in res["whole"].get("runs") or [res["whole"]]]
        old = [r["service"] for r in base["whole"].get("runs") or [base["whole"]]]
        rps_c, rps_b = med(cur, "rps"), med(old, "rps")
        us_c, us_b = med(cur, "service_cpu_us_per_request"), med(old, "service_cpu_us_per_request")
        out["whole"] = {
            "concurrency": cur[0]["concurrency"],
            "runs": len(cur),
            "rps": {"current": rps_c, "baseline": rps_b, "ratio": ratio(rps_c, rps_b)},
            "errors": {"current": sum(x["errors"] for x in cur), "baseline": sum(x["errors"] for x in old)},
            "cpu_us_per_request": {"current": us_c, "baseline": us_b, "ratio": ratio(us_c, us_b)},
            "latency_ms_p99": {"current": med(cur, "latency_ms_p99"), "baseline": med(old, "latency_ms_p99")},
        }  # fmt: skip
    by_n = {x["n"]: x for x in levels}
    criteria: dict[str, list[Any]] = {}
    for n in COMPARE_CPU_LEVELS:
        if n in by_n:
            c = by_n[n]["cpu_us_per_chunk"]
            criteria[f"CPU per chunk at {n} streams <= {COMPARE_CPU_MAX_RATIO:g} x baseline"] = [
                c["ratio"] <= COMPARE_CPU_MAX_RATIO,
                f"{c['current']:.1f} / {c['baseline']:.1f} us = {c['ratio']:.3f}",
            ]
    if COMPARE_ERROR_LEVEL in by_n:
        e = by_n[COMPARE_ERROR_LEVEL]["errors"]
        criteria[f"zero errors at {COMPARE_ERROR_LEVEL} streams"] = [
            e["current"] == 0,
            f"{e['current']} errors (baseline {e['baseline']})",
        ]
    if "whole" in out:
        r = out["whole"]["rps"]
        criteria[
            f"non-streamed req/s at concurrency {out['whole']['concurrency']} not below baseline"
        ] = [
            r["ratio"] >= 1.0,
            f"{r['current']:.0f} / {r['baseline']:.0f} req/s = {r['ratio']:.3f}",
        ]
    out["criteria"] = criteria
    return out


def table(hdr: Sequence[str], rows: Sequence[Sequence[str]], w: Callable[[str], Any]) -> None:
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(hdr)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) for i, c in enumerate(cells)) + "\n"

    w(line(hdr))
    w(line(["-" * x for x in widths]))
    for row in rows:
        w(line(row))


def print_levels(rows_in: Sequence[dict[str, Any]], w: Callable[[str], Any]) -> None:
    hdr = (
        "streams", "errors", "TTFC p50 svc/direct", "added TTFC p50", "added p99",
        "probe added p50/p99",
        "dur p99 svc/direct", "pace", "pace excl TTFC", "SYN drops", "svc core (+other)", "us/chunk",
        "chunks/event", "peak RSS", "harness core",
    )  # fmt: skip
    rows = []
    for r in rows_in:
        s, d = r["service"], r["direct"]
        err = str(r["errors"])
        if r["errors"]:
            err += " (" + ", ".join(f"{k}: {v}" for k, v in s["error_kinds"].items()) + ")"
        if r["direct_errors"]:
            err += f" [direct {r['direct_errors']}]"
        rows.append((
            str(r["n"]),
            err,
            f"{s['ttfc_ms_p50']:.1f}/{d['ttfc_ms_p50']:.1f} ms",
            f"{r['added_ttfc_ms_p50']:+.1f} ms",
            f"{r['added_ttfc_ms_p99']:+.1f} ms",
            f"{r['probe_added_ttfc_ms_p50']:+.1f}/{r['probe_added_ttfc_ms_p99']:+.1f} ms",
            f"{s['duration_ms_p99'] / 1000:.2f}/{d['duration_ms_p99'] / 1000:.2f} s",
            f"{r['pace_ratio_p99']:.3f}",
            f"{r['body_pace_ratio_p99']:.3f}",
            f"{s['listen_drops']}/{d['listen_drops']}",
            f"{100 * r['service_core_busy']:.0f}% (+{100 * r['service_core_other_busy']:.0f}%)",
            f"{r['service_cpu_us_per_chunk']:.1f} ({100 * r['service_sys_share']:.0f}% sys)",
            f"{r['chunks_per_event']:.2f}",
            f"{r['peak_rss_mb']:.0f} MB",
            f"{100 * s['harness_core_busy']:.0f}%/{100 * d['harness_core_busy']:.0f}%",
        ))  # fmt: skip
    table(hdr, rows, w)


def print_whole(wh: dict[str, Any], w: Callable[[str], Any]) -> None:
    s, d = wh["service"], wh["direct"]
    runs = len(wh.get("runs") or [wh])
    w(
        f"\nnon-streamed POST /api/chat, {s['concurrency']} keep-alive connections, "
        f"{s['seconds']:.1f} s each"
        + (f" (the median of {runs} runs by service req/s)" if runs > 1 else "")
        + ":\n"
    )
    for name, x in (("service", s), ("direct", d)):
        w(
            f"  {name:8s}{x['rps']:8.0f} req/s  p50 {x['latency_ms_p50']:.1f} ms, "
            f"p99 {x['latency_ms_p99']:.1f} ms, errors {x['errors']}, "
            + (
                f"{x['service_cpu_us_per_request']:.0f} us service CPU/request, "
                f"service core {100 * x['service_core_busy']:.0f}%\n"
                if name == "service"
                else f"harness core {100 * x['harness_core_busy']:.0f}%\n"
            )
        )
    w(f"  service/direct {wh['ratio']:.2f}\n")


def print_comparison(res: dict[str, Any], w: Callable[[str], Any]) -> None:
    base, cmp = res["baseline"], res["comparison"]
    runs = max([x["runs"] for x in cmp["levels"]] + [cmp.get("whole", {}).get("runs", 1)])
    w(
        f"\nworking tree (current) vs baseline {base['ref']} ({base['commit'][:12]}), "
        + (f"medians of {runs} alternating runs each" if runs > 1 else "one run each, alternating")
        + ":\n\n"
    )
    hdr = (
        "streams", "us/chunk cur/base", "ratio", "errors cur/base", "pace cur/base",
        "added TTFC p99 cur/base", "TTFC p99 delta", "chunks/event cur/base",
    )  # fmt: skip
    rows = []
    for x in cmp["levels"]:
        c, e, p = x["cpu_us_per_chunk"], x["errors"], x["pace_ratio_p99"]
        t, k = x["added_ttfc_ms_p99"], x["chunks_per_event"]
        rows.append((
            str(x["n"]),
            f"{c['current']:.1f}/{c['baseline']:.1f}",
            f"{c['ratio']:.3f}",
            f"{e['current']}/{e['baseline']}" + (f" [direct {e['direct']}]" if e["direct"] else ""),
            f"{p['current']:.3f}/{p['baseline']:.3f}",
            f"{t['current']:+.1f}/{t['baseline']:+.1f} ms",
            f"{t['delta']:+.1f} ms",
            f"{k['current']:.2f}/{k['baseline']:.2f}",
        ))  # fmt: skip
    table(hdr, rows, w)
    wh = cmp.get("whole")
    if wh:
        r, u, e = wh["rps"], wh["cpu_us_per_request"], wh["errors"]
        w(
            f"\n  non-streamed req/s at concurrency {wh['concurrency']}: {r['current']:.0f}/"
            f"{r['baseline']:.0f} = {r['ratio']:.3f}; service CPU per request {u['current']:.0f}/"
            f"{u['baseline']:.0f} us = {u['ratio']:.3f}; errors {e['current']}/{e['baseline']}\n"
        )
    w(
        "\n  ratio = current / baseline (below 1: the working tree spends less CPU per chunk);"
        " TTFC p99 delta =\n  current minus baseline added TTFC p99. Ratios within a few % of 1"
        " are noise on a shared machine: --repeat 3\n\n  against the baseline:\n"
    )
    for name, (ok, detail) in cmp["criteria"].items():
        w(f"  [{'ok' if ok else 'MISS'}] {name}: {detail}\n")


def print_table(res: dict[str, Any], out: Any = sys.stdout) -> None:
    a, m = res["config"], res["machine"]
    w = out.write
    base = res.get("baseline")
    w(
        f"\nquartchat relay bench: upstream {a['upstream']} with {a['chunks']} chunks x "
        f"{a['interval'] * 1000:g} ms (nominal {a['chunks'] * a['interval']:g} s); service on cpu "
        f"{a['service_cpu']}, harness on cpu {a['harness_cpu']}; {m['nproc']} x {m['cpu_model']}"
        + (f"; service backlog {a['service_backlog']}" if a["service_backlog"] else "")
        + "\n\n"
    )
    if base:
        w(f"current (the working tree, {res['service_imported_from']}):\n\n")
    print_levels(res["levels"], w)
    w(
        "\n  added TTFC = service percentile minus direct percentile (time to the first content chunk)\n"
        "  probe added = the same for single streams opened one by one while the N run (no burst)\n"
        "  pace = service p99 stream duration / direct p99; pace excl TTFC = the same from the first chunk\n"
        "  SYN drops = kernel ListenDrops in the service/direct phase (each is a 1 s+ SYN retry)\n"
        "  svc core = service CPU / wall time of the phase (+other = the rest of that core's busy time:\n"
        "    softirq packet delivery and anything else); us/chunk = service CPU / upstream chunks relayed\n"
        "  chunks/event = upstream chunks per `chunk` event (>1: the relay merged reads, it was behind)\n"
        "  harness core = load generator + upstream CPU / wall, service/direct phase (near 100%: harness-bound)\n"
    )
    if res.get("whole"):
        print_whole(res["whole"], w)
    if base:
        w(f"\nbaseline {base['ref']} ({base['commit'][:12]}, {base['imported_from']}):\n\n")
        print_levels(base["levels"], w)
        if base.get("whole"):
            print_whole(base["whole"], w)
    w("\ntargets" + (" (the working tree)" if base else "") + ":\n")
    for name, (ok, detail) in res["targets"].items():
        w(f"  [{'ok' if ok else 'MISS'}] {name}: {detail}\n")
    for key, prof in (res.get("profile") or {}).items():
        w(
            f"\npy-spy, {key}: {prof['samples']} samples holding the GIL at {a['profile_rate']} Hz (= where the CPU goes); "
            f"{prof['collapsed_stacks']}\n"
        )
        w("  self time by package: "
          + ", ".join(f"{k} {v}%" for k, v in list(prof["self_by_package"].items())[:8]) + "\n")  # fmt: skip
        w(f"  {'self%':>6} {'total%':>6}  function (by self time)\n")
        for row in prof["top_self"][:12]:
            w(f"  {row['self_pct']:6.1f} {row['total_pct']:6.1f}  {row['function']}\n")
    if base:
        print_comparison(res, w)
    w("\n")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="quartchat relay load benchmark (see the module docstring)"
    )
    add = p.add_argument
    add("--levels", default="50,200,500,1000", help="concurrent streams per level (comma list)")
    add("--chunks", type=int, default=200, help="content chunks per upstream stream")
    add("--interval", type=float, default=0.02, help="seconds between upstream chunks")
    add("--upstream", choices=("bench", "tests"), default="bench",
        help="bench: bench/upstream.py (default); tests: tests/fake_upstream.py as it is")  # fmt: skip
    add("--whole-concurrency", type=int, default=50, help="concurrency of the non-streamed test")
    add("--whole-seconds", type=float, default=5.0, help="seconds per non-streamed run (0: skip)")
    add("--service-cpu", type=int, default=0, help="core the service is pinned to")
    add("--harness-cpu", type=int, default=1, help="core of the load generator and the upstream")
    add("--service-backlog", type=int, default=0,
        help="what-if: start the service with hypercorn's listen backlog set to this "
        "(default: as deployed, hypercorn's 100)")  # fmt: skip
    add("--probes", type=int, default=20,
        help="single streams opened one at a time while each level's N streams run (0: none)")  # fmt: skip
    add("--probe-delay", type=float, default=1.5, help="seconds into the phase of the first probe")
    add("--probe-gap", type=float, default=0.05, help="seconds between probes")
    add("--service-python", default=sys.executable,
        help="what-if: the interpreter (of another venv) to run the service with")  # fmt: skip
    add("--service-prelude", default="",
        help="what-if: Python run in the service process before quartchat starts, "
        "e.g. 'import gc; gc.set_threshold(50000, 20, 20)'")  # fmt: skip
    add("--timeout-factor", type=float, default=3.0, help="stream timeout: nominal x this + 10 s")
    add("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    add("--log-level", default="INFO", help="the service's LOG_LEVEL (its log goes to a file)")
    add("--profile", type=int, default=0, metavar="N",
        help="after the measured runs, record the service with py-spy during one more N-stream "
        "phase and one more non-streamed run")  # fmt: skip
    add("--profile-rate", type=int, default=250, help="py-spy samples per second")
    add("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    add("--baseline-ref", default=None, metavar="REF",
        help="also serve the relay of git commit REF (extracted into OUTDIR/baseline-<sha>) and "
        "measure it alternately with the working tree's; prints the ratios")  # fmt: skip
    add("--repeat", type=int, default=1, metavar="N",
        help="measure every level and the non-streamed run N times (alternating with the "
        "baseline's); the comparison takes medians")  # fmt: skip
    add("--outdir", default=str(ROOT / "artifacts" / "bench"),
        help="logs, profiles and baseline trees go here")  # fmt: skip
    add("--json", nargs="?", const="-", default=None, metavar="PATH",
        help="also write the results as JSON, to PATH or to stdout")  # fmt: skip
    add("--peers", action="store_true",
        help="instead: quartchat beside nginx, naive relays and each server (bench/peers_bench.py, "
        "which takes the other options; --peers --help lists them)")  # fmt: skip
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
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
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


LABELS = {"service": "current", "baseline": "baseline"}


def whole_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One non-streamed result: the run with the (lower) median service req/s; all in `runs`."""
    out = dict(sorted(runs, key=lambda r: float(r["service"]["rps"]))[(len(runs) - 1) // 2])
    if len(runs) > 1:
        out["runs"] = runs
    return out


async def run(
    args: argparse.Namespace, services: dict[str, tuple[Child, int]], upstream: Child, uport: int
) -> dict[str, Any]:
    """Measure every service in `services` ("service": the working tree's, and "baseline")."""
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):  # stop between awaits, then clean up
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    expected = WORD * args.chunks
    chat = {"messages": [{"role": "user", "content": "benchmark"}]}
    body = json.dumps(chat).encode()
    # What the service sends upstream for these, so the baseline is the same work upstream.
    stream_body = {**chat, "model": "gpt-4o-mini", "stream": True}
    direct_stream = json.dumps({**stream_body, "stream_options": {"include_usage": True}}).encode()
    direct_whole = json.dumps({**chat, "model": "gpt-4o-mini", "stream": False}).encode()
    targets = {
        name: Target(
            name,
            port,
            http_post("/api/chat/stream", port, body, close=True),
            http_post("/api/chat", port, body, close=False),
            re.compile(rb"event: chunk\n"),
            lambda status, b: judge_service_stream(status, b, expected),
            child,
        )
        for name, (child, port) in services.items()
    }
    current = services["service"][0]
    targets["direct"] = Target(
        "direct",
        uport,
        http_post("/v1/chat/completions", uport, direct_stream, close=True),
        http_post("/v1/chat/completions", uport, direct_whole, close=False),
        re.compile(rb'"content": ?"[^"]'),
        lambda status, b: judge_upstream_stream(status, b, expected),
        current,
    )
    names = list(services)
    compared = len(names) > 1

    def order(i: int) -> list[str]:
        # Who goes first alternates, so that neither service is always the one measured after
        # the other's leftovers, or always the later one on a machine that is slowing down.
        return names if i % 2 == 0 else names[::-1]

    def label(name: str) -> str:
        return f" {LABELS[name]}" if compared else ""

    bench = Bench(args, [child for child, _ in services.values()], upstream, targets)
    for name in names:
        warm = await bench.stream_phase(targets[name], 20)  # imports, pools, code paths
        if warm.errors:
            raise SystemExit(
                f"warm-up{label(name)} failed: {warm.errors} {warm.error_samples}; "
                f"see {targets[name].proc.log}"
            )
    res: dict[str, Any] = {"levels": []}
    # Non-streamed first, on services that only the warm-up has touched: after the 1000-stream
    # level a service's upstream pool still holds ~1000 idle connections for 30 s.
    whole_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    if args.whole_seconds > 0:
        c, secs = args.whole_concurrency, args.whole_seconds
        for i in range(args.repeat):
            await asyncio.sleep(args.pause)
            d = await bench.whole_phase(targets["direct"], c, secs)
            for name in order(i):
                await asyncio.sleep(args.pause)
                s = await bench.whole_phase(targets[name], c, secs)
                whole_runs[name].append(
                    {"service": s, "direct": d, "ratio": ratio(s["rps"], d["rps"])}
                )
                say(
                    f"  non-streamed{label(name)}: {s['rps']:.0f} req/s through the service, "
                    f"{d['rps']:.0f} direct"
                )
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for li, n in enumerate(args.levels):
        for i in range(args.repeat):
            await asyncio.sleep(args.pause)
            base = await bench.stream_phase(targets["direct"], n)  # shared by this run's services
            for name in order(li + i):
                await asyncio.sleep(args.pause)
                svc = await bench.stream_phase(targets[name], n)
                row = level_row(args, svc, base)
                row["run"] = i
                rows[name].append(row)
                say(
                    f"  {n:5d} streams{label(name)}: errors {row['errors']} (direct "
                    f"{row['direct_errors']}), added TTFC p99 {row['added_ttfc_ms_p99']:+.1f} ms, "
                    f"pace {row['pace_ratio_p99']:.3f}, {row['service_cpu_us_per_chunk']:.1f} "
                    f"us/chunk, service core {100 * row['service_core_busy']:.0f}%, SYN drops "
                    f"{svc.listen_drops}"
                )
    res["levels"] = rows["service"]
    if whole_runs["service"]:
        res["whole"] = whole_summary(whole_runs["service"])
    if compared:
        baseline = services["baseline"][0]
        res["baseline"] = {
            "levels": rows["baseline"],
            "whole": whole_summary(whole_runs["baseline"]) if whole_runs["baseline"] else None,
            "vmhwm_mb": baseline.status_kb("VmHWM") / 1024,
        }
    if args.profile:
        outdir = Path(args.outdir)
        prof: dict[str, Any] = {}
        n = args.profile
        say(f"  profiling the service with py-spy: {n} streams ...")
        await asyncio.sleep(args.pause)
        prof[f"{n} streams"] = await profiled(
            bench, f"service-stream-{n}", outdir,
            lambda: _summary(bench.stream_phase(targets["service"], n)),
        )  # fmt: skip
        c = args.whole_concurrency
        say(f"  profiling the service with py-spy: non-streamed at {c} ...")
        await asyncio.sleep(args.pause)
        prof[f"non-streamed at {c}"] = await profiled(
            bench, f"service-whole-{c}", outdir,
            lambda: bench.whole_phase(targets["service"], c, max(3.0, args.whole_seconds)),
        )  # fmt: skip
        res["profile"] = prof
    res["service_vmhwm_mb"] = current.status_kb("VmHWM") / 1024
    return res


async def _summary(phase: Any) -> dict[str, Any]:
    return (await phase).summary()  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--peers" in argv:  # quartchat beside nginx, naive relays and other servers (issue 19)
        from peers_bench import main as peers

        return peers([a for a in argv if a != "--peers"])
    args = parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        say("warning: one core only; the service and the harness share it")
        args.service_cpu = args.harness_cpu = 0
    top = max([*args.levels, args.profile, args.whole_concurrency])
    # A baseline's upstream pool is one more connection per stream held open by the upstream.
    limit = raise_fd_limit((5 if args.baseline_ref else 4) * top + 1024)
    os.sched_setaffinity(0, {args.harness_cpu})
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    baseline = materialise_baseline(args.baseline_ref, outdir) if args.baseline_ref else None
    logdir = Path(tempfile.mkdtemp(prefix="logs-", dir=outdir))

    stop_children_on_exit()
    uport, sport, bport = free_port(), free_port(), free_port()
    env = child_env()
    module = UPSTREAM_MODULES[args.upstream]
    # Each service keeps its data (a SQLite file, a secret key) in a directory of its own.
    data = Path(tempfile.mkdtemp(prefix="relay-bench-data-"))
    service_env = {
        **env,
        "OPENAI_API_BASE": f"http://{HOST}:{uport}/v1",
        "APP_HOST": HOST,
        "APP_PORT": str(sport),
        "LOG_LEVEL": args.log_level,
        # The relay alone: no credential to check. A baseline from before accounts ignores both.
        "AUTH_MODE": "none",
        "DATA_DIR": str(data / "service"),
    }
    if top > 1000:  # the service's default pool holds 1000 upstream connections
        service_env["UPSTREAM_MAX_CONNECTIONS"] = str(top + 100)
    prelude = args.service_prelude
    if args.service_backlog:  # hypercorn's Config() reads the class default; quartchat keeps it
        prelude += f"\nimport hypercorn.config as c; c.Config.backlog = {args.service_backlog}"
    # Compared, both services start the same way, each saying which package it imported.
    service_argv_ = service_argv(args.service_python, prelude, report=baseline is not None)
    try:
        upstream_cmd = upstream_argv(args.upstream, uport, args.chunks, args.interval)
        upstream = spawn("upstream", upstream_cmd, args.harness_cpu, env, logdir)
        service = spawn("service", service_argv_, args.service_cpu, service_env, logdir)
        services = {"service": (service, sport)}
        if baseline:
            baseline_env = {
                **service_env,
                "PYTHONPATH": str(baseline.tree),
                "APP_PORT": str(bport),
                "DATA_DIR": str(data / "baseline"),
            }
            services["baseline"] = (
                spawn(
                    "baseline", service_argv_, args.service_cpu, baseline_env, logdir, baseline.tree
                ),
                bport,
            )
        wait_for_port(upstream, uport)
        for child, port in services.values():
            wait_for_port(child, port)
        say(
            f"upstream ({module}) pid {upstream.pid} on :{uport} cpu {args.harness_cpu}; service "
            f"pid {service.pid} on :{sport} cpu {args.service_cpu}; fd limit {limit}; logs {logdir}"
        )
        imported: dict[str, str] = {}
        if baseline:
            for name, tree in (("service", ROOT), ("baseline", baseline.tree)):
                imported[name] = str(check_imported_from(services[name][0], tree))
            say(
                f"baseline {baseline.ref} ({baseline.commit[:12]}) pid {services['baseline'][0].pid}"
                f" on :{bport} cpu {args.service_cpu}, serving {imported['baseline']}"
            )
        res = on_uvloop(run(args, services, upstream, uport))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted")
        return 130
    finally:
        stop_children()
        shutil.rmtree(data, ignore_errors=True)
    res["config"] = {k: v for k, v in vars(args).items()}
    res["machine"] = machine()
    res["targets"] = check_targets(res)
    if baseline:
        res["service_imported_from"] = imported["service"]
        res["baseline"].update(
            ref=baseline.ref,
            commit=baseline.commit,
            tree=str(baseline.tree),
            imported_from=imported["baseline"],
        )
        res["comparison"] = compare(res)
    print_table(res)
    if args.json:
        write_json(res, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
