#!/usr/bin/env python
"""What metrics (quartchat/usage/metrics.py) add to one request: microseconds of CPU per request.

    .venv/bin/python bench/metrics_bench.py                 # a few seconds
    .venv/bin/python bench/metrics_bench.py --requests 200000

One metered request costs the metrics `started()` and `record()` (a streamed chat that reached
the upstream: in flight, time to first token, duration, two token counters) and `access()` (the
request counter). Timed in a loop over `--requests` requests, in memory (one process) and in
multiprocess mode (APP_WORKERS > 1: every value written to an mmapped file in a temporary
directory), against the same loop with a sink that does nothing; and one scrape
(`exposition()`) after it. Prints microseconds per request (best of `--repeat` runs). A script,
not a test: it enforces nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from quartchat.accesslog import AccessRecord  # noqa: E402
from quartchat.usage.meter import Record, Request  # noqa: E402
from quartchat.usage.metrics import Metrics  # noqa: E402

ROUTES = ("api", "page", "v1.chat")
MODELS = ("gpt-4o-mini", "gpt-4o", "llama3.1:8b")


class Nothing:
    """A sink and access observer that does nothing: the loop's own cost."""

    def started(self, request: Request) -> None:
        pass

    def record(self, record: Record) -> None:
        pass

    def access(self, access: AccessRecord) -> None:
        pass


def requests(n: int) -> list[tuple[Request, Record, AccessRecord]]:
    made = []
    for i in range(n):
        request = Request(ROUTES[i % 3], "r", 1, None, upstream="default", model=MODELS[i % 3])
        record = Record(request, "ok", 200, 120, 480, False, 350, 4200, None)
        access = AccessRecord("r", "POST", "/api/chat/stream", status=200, rule="/api/chat/stream")
        made.append((request, record, access))
    return made


def per_request_us(
    sink: Metrics | Nothing, work: list[tuple[Request, Record, AccessRecord]]
) -> float:
    started = time.process_time()
    for request, record, access in work:
        sink.started(request)
        sink.record(record)
        sink.access(access)
    return (time.process_time() - started) / len(work) * 1e6


def run(mode: str, n: int, repeat: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="metrics-bench-")) if mode == "multiprocess" else None
    metrics = Metrics(directory)
    work = requests(n)
    per_request_us(metrics, work[:1000])  # the label sets exist before timing
    nothing = min(per_request_us(Nothing(), work) for _ in range(repeat))
    measured = min(per_request_us(metrics, work) for _ in range(repeat))
    started = time.process_time()
    size = len(metrics.exposition())
    scrape_ms = (time.process_time() - started) * 1e3
    print(
        f"{mode:>12}: {measured - nothing:6.2f} µs per request "
        f"(loop alone {nothing:.2f} µs; {n} requests, best of {repeat}); "
        f"one scrape {scrape_ms:.1f} ms CPU, {size} bytes"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="metrics' CPU per request (see the docstring)")
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--mode", choices=("memory", "multiprocess"), help="(one run of one mode)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode is not None:
        run(args.mode, args.requests, args.repeat)
        return
    # Each mode in a process of its own: multiprocess mode changes how every metric the process
    # makes from then on keeps its values.
    for mode in ("memory", "multiprocess"):
        command = [sys.executable, __file__, "--mode", mode, "--requests", str(args.requests)]
        command += ["--repeat", str(args.repeat)]
        subprocess.run(command, check=True, env=os.environ)


if __name__ == "__main__":
    main()
