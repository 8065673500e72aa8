#!/usr/bin/env python
"""The chat page while a long reply streams, measured in Chromium: main-thread CPU and the
longest task, before (a commit's page, HEAD by default) and after (the working tree).

    .venv/bin/python bench/page_bench.py                    # 4k, 10k, 20k tokens; about 3 minutes
    .venv/bin/python bench/page_bench.py --repeat 3 --json artifacts/bench/page.json
    .venv/bin/python bench/page_bench.py --tokens 20000 --no-baseline

The fake upstream (tests/fake_upstream.py, in this process) streams a Markdown reply of
`--tokens` tokens (sections of headings, paragraphs with bold, code and links, an inline formula,
numbered and nested lists, a Python code block, a table and a quote, cut into tokens of about
four characters: 3.6 characters a token on average) at `--rate` tokens per second, one token per
SSE event, `--batch` events per write. The service is `python -m quartchat` (AUTH_MODE=none, a
temporary DATA_DIR); the baseline is the tree of `--baseline-ref`, extracted with `git archive`
and served side by side as bench/relay_bench.py does (the checkout is not touched). Debian's
Chromium (/usr/bin/chromium) through Playwright, a fresh context (empty storage and cache) per
run, 1280 x 800; the reply is asked for by typing into the page, like a person.

Measured from the question being sent until the reply's article says it is no longer busy:

* main-thread CPU: the thread time of every top-level task on the page's renderer main thread,
  from a Chromium trace (category `toplevel`), and Chromium's own TaskDuration as a cross-check;
* the longest task on that thread (wall time, and the most thread time one task took: on a
  shared machine a task's wall time includes time the thread waited for a core), and the
  number of tasks of 50 ms or more (wall time);
* catch-up: from the upstream's last byte to the page showing the whole reply.

The sizes run one after another, the two pages alternating (which goes first changes from size
to size and run to run); `--repeat N` runs everything N times and reports medians. A script, not a
test: it prints the figures and the targets (CPU for 20k tokens at most 5 x that for 4k; no task
over 50 ms while 20k tokens stream), and exits 0 unless the harness failed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relay_bench import (
    ROOT,
    materialise_baseline,
    start_page_service,
    stop_children,
)

sys.path.insert(0, str(ROOT))
from playwright.sync_api import Browser, CDPSession, Page, sync_playwright

from tests.fake_upstream import FakeUpstream, Reply, completion_chunks
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS

TARGET_GROWTH = 5.0  # CPU for the largest reply over CPU for the smallest, at most
TARGET_LONGEST_MS = 50.0  # no task longer while the largest reply streams
TRACE_CATEGORIES = ["toplevel", "__metadata"]
TASK = "ThreadControllerImpl::RunTask"

WORDS = (
    "the",
    "renderer",
    "keeps",
    "every",
    "finished",
    "block",
    "and",
    "lexes",
    "only",
    "what",
    "follows",
    "it",
    "so",
    "the",
    "cost",
    "of",
    "a",
    "frame",
    "does",
    "not",
    "grow",
    "with",
    "the",
    "reply",
    "while",
    "selection",
    "survives",
    "in",
    "paragraphs",
    "above",
)
TOKEN = re.compile(r"\s*\S{1,4}|\s+")


def words(seed: int, count: int) -> str:
    return " ".join(WORDS[(seed + 7 * j) % len(WORDS)] for j in range(count))


def section(i: int) -> str:
    """One section of the reply (about 1,100 characters): the blocks a long answer is made of."""
    rows = "".join(f"| row {r} | {i * 10 + r} | {words(i + r, 3)} |\n" for r in range(4))
    return (
        f"## Section {i}: {words(i, 4)}\n\n"
        f"{words(i, 14).capitalize()} with **{words(i + 1, 2)}**, `code_{i}()` and "
        f"[a link](https://example.com/{i}). {words(i + 2, 18).capitalize()}, where "
        f"$x_{{{i}}}^2 + y^2 = r^2$ holds. {words(i + 3, 12).capitalize()}.\n\n"
        f"1. **Step one**: {words(i + 4, 10)}.\n2. **Step two**: {words(i + 5, 12)}.\n"
        f"   - {words(i + 6, 6)}\n   - {words(i + 7, 6)}\n3. **Step three**: {words(i + 8, 9)}.\n\n"
        f"```python\ndef handler_{i}(request, items):\n    total = 0\n    for item in items:\n"
        f"        if item.price > {i}:\n            total += item.price * 2  # {words(i, 3)}\n"
        f'    return {{"total": total, "count": len(items)}}\n```\n\n'
        f"| Name | Value | Note |\n|------|------:|------|\n{rows}\n"
        f"> {words(i + 9, 16).capitalize()}.\n\n{words(i + 10, 20).capitalize()}.\n\n"
    )


def reply_tokens(count: int) -> list[str]:
    """`count` tokens of Markdown, about four characters each (a word, or a piece of one)."""
    tokens: list[str] = []
    i = 0
    while len(tokens) < count:
        tokens += TOKEN.findall(section(i))
        i += 1
    return tokens[:count]


def paced_reply(tokens: list[str], rate: float, batch: int) -> Reply:
    """One SSE event per token, `batch` events per write, `rate` tokens a second."""
    events = completion_chunks(tokens)
    writes = [b"".join(events[i : i + batch]) for i in range(0, len(events), batch)]
    return Reply(chunks=writes, delay=batch / rate)


@dataclass
class Run:
    page: str
    tokens: int
    characters: int
    seconds: float  # from the question sent to the reply shown whole
    cpu_ms: float  # thread time of the renderer main thread's tasks
    task_duration_ms: float  # Chromium's TaskDuration over the same span (wall time of tasks)
    longest_task_ms: float
    longest_task_cpu_ms: float  # the most thread time one task took
    tasks_over_50ms: int
    catch_up_ms: float  # from the upstream's last byte to the whole reply shown


def main_thread_tasks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The top-level tasks of the busiest renderer main thread in a trace (the page's)."""
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"
    }
    by_thread: dict[tuple[int, int], list[dict[str, Any]]] = {m: [] for m in mains}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if e.get("name") == TASK and e.get("ph") == "X" and key in by_thread:
            by_thread[key].append(e)
    if not by_thread:
        return []
    tasks = max(by_thread.values(), key=lambda ts: sum(t.get("tdur", 0) for t in ts))
    tasks.sort(key=lambda t: t["ts"])
    top: list[dict[str, Any]] = []
    end = -1
    for task in tasks:  # a task run inside another (a nested run loop) counts once
        if task["ts"] >= end:
            top.append(task)
            end = task["ts"] + task["dur"]
    return top


class Tracer:
    """A Chromium trace of the page, through the DevTools protocol."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        self.events: list[dict[str, Any]] = []
        self.complete = False
        cdp.on("Tracing.dataCollected", lambda e: self.events.extend(e["value"]))
        cdp.on("Tracing.tracingComplete", lambda _: setattr(self, "complete", True))

    def start(self) -> None:
        config = {"includedCategories": TRACE_CATEGORIES, "recordMode": "recordAsMuchAsPossible"}
        self.cdp.send("Tracing.start", {"transferMode": "ReportEvents", "traceConfig": config})

    def stop(self, page: Page) -> list[dict[str, Any]]:
        self.cdp.send("Tracing.end")
        deadline = time.monotonic() + 60
        while not self.complete and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        return self.events


def task_duration(cdp: CDPSession) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))


def measure(
    browser: Browser, fake: FakeUpstream, name: str, url: str, count: int, args: argparse.Namespace
) -> Run:
    tokens = reply_tokens(count)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        tracer = Tracer(cdp)
        fake.last_pieces_sent.clear()
        fake.reply_with(paced_reply(tokens, args.rate, args.batch))
        box = page.get_by_label("Message", exact=True)
        box.fill("Write a long answer, please.")
        tracer.start()
        before = task_duration(cdp)
        t0 = time.monotonic()
        box.press("Enter")
        page.wait_for_function(
            "() => document.querySelector('#messages .msg.assistant[aria-busy=\"false\"]')",
            timeout=(count / args.rate + 120) * 1000,
            polling=200,
        )
        shown = time.monotonic()
        spent = task_duration(cdp) - before
        tasks = main_thread_tasks(tracer.stop(page))
        last_piece = fake.last_pieces_sent[-1] if fake.last_pieces_sent else shown
        return Run(
            page=name,
            tokens=count,
            characters=len("".join(tokens)),
            seconds=shown - t0,
            cpu_ms=sum(t.get("tdur", t["dur"]) for t in tasks) / 1000,
            task_duration_ms=spent * 1000,
            longest_task_ms=max((t["dur"] for t in tasks), default=0) / 1000,
            longest_task_cpu_ms=max((t.get("tdur", t["dur"]) for t in tasks), default=0) / 1000,
            tasks_over_50ms=sum(t["dur"] >= 50_000 for t in tasks),
            catch_up_ms=max(0.0, shown - last_piece) * 1000,
        )
    finally:
        context.close()


def median_run(runs: list[Run]) -> dict[str, Any]:
    numbers = (
        "seconds",
        "cpu_ms",
        "task_duration_ms",
        "longest_task_ms",
        "longest_task_cpu_ms",
        "catch_up_ms",
    )
    row: dict[str, Any] = {"page": runs[0].page, "tokens": runs[0].tokens}
    row["characters"] = runs[0].characters
    row.update({key: statistics.median(getattr(r, key) for r in runs) for key in numbers})
    row["tasks_over_50ms"] = statistics.median(r.tasks_over_50ms for r in runs)
    row["longest_task_ms_max"] = max(r.longest_task_ms for r in runs)
    row["longest_task_cpu_ms_max"] = max(r.longest_task_cpu_ms for r in runs)
    return row


def print_table(
    rows: list[dict[str, Any]], args: argparse.Namespace, load: Sequence[float]
) -> None:
    print(
        f"\nA Markdown reply at {args.rate:.0f} tokens/s ({args.batch} per write); "
        f"{args.repeat} run(s), medians; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    head = ("page", "tokens", "KB", "streamed", "main-thread CPU", "CPU / s", "TaskDuration",
            "longest task", "its CPU max", "tasks ≥ 50 ms", "catch-up")  # fmt: skip
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["page"],
                f"{r['tokens']:,}",
                f"{r['characters'] / 1000:.0f}",
                f"{r['seconds']:.1f} s",
                f"{r['cpu_ms'] / 1000:.2f} s",
                f"{r['cpu_ms'] / r['seconds']:.0f} ms",
                f"{r['task_duration_ms'] / 1000:.2f} s",
                f"{r['longest_task_ms']:.0f} ms",
                f"{r['longest_task_cpu_ms']:.0f} ms",
                f"{r['tasks_over_50ms']:.0f}",
                f"{r['catch_up_ms']:.0f} ms",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    small, large = min(args.tokens), max(args.tokens)
    for page in dict.fromkeys(r["page"] for r in rows):
        by = {r["tokens"]: r for r in rows if r["page"] == page}
        growth = by[large]["cpu_ms"] / by[small]["cpu_ms"] if by[small]["cpu_ms"] else float("inf")
        longest = by[large]["longest_task_ms_max"]
        longest_cpu = by[large]["longest_task_cpu_ms_max"]
        print(f"{page}:")
        print(f"  CPU for {large:,} tokens = {growth:.1f} x CPU for {small:,} (target ≤ "
              f"{TARGET_GROWTH:.0f} x): {'met' if growth <= TARGET_GROWTH else 'NOT met'}")  # fmt: skip
        print(f"  longest task while {large:,} tokens stream: {longest:.0f} ms (target < "
              f"{TARGET_LONGEST_MS:.0f} ms): {'met' if longest < TARGET_LONGEST_MS else 'NOT met'}; "
              f"the most CPU one task took: {longest_cpu:.0f} ms: "
              f"{'met' if longest_cpu < TARGET_LONGEST_MS else 'NOT met'}")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--tokens", default="4000,10000,20000", help="reply sizes, comma-separated")
    add("--rate", type=float, default=500.0, help="tokens per second")
    add("--batch", type=int, default=10, help="SSE events per write")
    add("--baseline-ref", default="HEAD", metavar="REF", help="the page to compare with")
    add("--no-baseline", action="store_true", help="measure the working tree only")
    add("--repeat", type=int, default=1)
    add("--json", type=Path, default=None, metavar="PATH")
    add("--outdir", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args(argv)
    args.tokens = [int(t) for t in str(args.tokens).split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(stop_children)
    logdir = args.outdir / f"page-logs-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    with FakeUpstream() as fake, sync_playwright() as playwright:
        services = {"after": start_page_service("service", fake.url, logdir, None)}
        if not args.no_baseline:
            baseline = materialise_baseline(args.baseline_ref, args.outdir)
            name = f"before ({args.baseline_ref} {baseline.commit[:7]})"
            services = {
                name: start_page_service("baseline", fake.url, logdir, baseline.tree),
                **services,
            }
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        runs: list[Run] = []
        step = 0
        for repeat in range(args.repeat):
            for count in args.tokens:
                order = list(services.items())
                if step % 2:
                    order.reverse()
                step += 1
                for name, url in order:
                    print(
                        f"run {repeat + 1}: {name}, {count:,} tokens", file=sys.stderr, flush=True
                    )
                    runs.append(measure(browser, fake, name, url, count, args))
        browser.close()
        stop_children()  # the services first: the fake upstream would cut their connections
    rows = [
        median_run([r for r in runs if r.page == name and r.tokens == count])
        for name in services
        for count in args.tokens
    ]
    print_table(rows, args, load)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
        data["runs"] = [asdict(r) for r in runs]
        args.json.write_text(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
