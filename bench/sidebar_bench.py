#!/usr/bin/env python
"""The chat page with many conversations, measured in Chromium: switching between
conversations, drawing a long one, and what a streaming reply costs the main thread.

    .venv/bin/python bench/sidebar_bench.py --baseline-ref HEAD     # about 3 minutes
    .venv/bin/python bench/sidebar_bench.py --json artifacts/bench/sidebar.json

It starts the fake upstream (tests/fake_upstream.py; a streamed reply is `--chunks` chunks
`--interval` apart) and the service (`python -m quartchat`, AUTH_MODE=none, a temporary DATA_DIR
of its own); with `--baseline-ref REF`, also the service of that commit, extracted with
`git archive` as bench/relay_bench.py does (the checkout is not touched), so "before" and "after"
run side by side in one browser, each on its own origin (and so its own localStorage). Debian's
Chromium (/usr/bin/chromium) through Playwright, a fresh context per service, 1280 x 800.

For each service, `--repeat` times, alternating which goes first:

1. switch: `--conversations` conversations (3 questions and answers each) written straight into
   localStorage in the page's first layout, which both versions read; then `--switches` switches
   among the newest 40 (set `location.hash`, as a click on a sidebar link does). Switch time: from
   setting the address to the frame after the conversation's messages are in the page. The
   longest task (Long Tasks API: tasks over 50 ms) while switching.
2. draw: one conversation of `--messages` messages (Markdown with code), opened from another
   one: time to the frame after its latest messages are in the page, and until all of them are;
   the longest task meanwhile.
3. stream: with the conversations of 1, one of them (the 500th newest) gets a question and its
   reply streams (`--chunks` chunks, `--interval` apart). Meanwhile: the longest task, tasks over 50 ms,
   the longest gap between animation frames, and the main thread's busy time (Chromium's
   TaskDuration, through the DevTools protocol) per second of streaming.

A script, not a test: it prints the figures and the target (a switch under 100 ms at 1,000
conversations) and exits 0 unless the harness failed. Logs go to artifacts/bench/sidebar-logs-*/.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay_bench import (
    HOST,
    ROOT,
    child_env,
    free_port,
    materialise_baseline,
    spawn,
    start_page_service,
    stop_children,
    upstream_argv,
    wait_for_port,
)

sys.path.insert(0, str(ROOT))
from playwright.sync_api import BrowserContext, Page, sync_playwright

from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, SEED_MANY

TARGET_SWITCH_MS = 100.0

# Long tasks from now on, as [startTime, duration].
WATCH_LONG_TASKS = """() => { window.__long = [];
  new PerformanceObserver((list) => { for (const e of list.getEntries())
    window.__long.push([e.startTime, e.duration]); }).observe({type: 'longtask'}); }"""

# Switch by address; resolve at the frame after the first message of the target is shown.
SWITCH = """async ([id, first]) => {
  const t0 = performance.now();
  location.hash = id;
  await new Promise((resolve) => { const look = () => {
      const shown = document.querySelector('#messages .msg .content');
      if (shown && shown.textContent === first) resolve(); else requestAnimationFrame(look); };
    look(); });
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  const t1 = performance.now();
  const long = window.__long.filter(([s]) => s >= t0 && s <= t1).map(([, d]) => d);
  return {ms: t1 - t0, longest: Math.max(0, ...long)};
}"""

# Open a long conversation; the time to its latest messages, and to all of them.
DRAW = """async ([id, count, last]) => {
  const t0 = performance.now();
  location.hash = id;
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve)));
  await new Promise((resolve) => { const look = () => {
      const all = document.querySelectorAll('#messages .msg');
      if (all.length && all[all.length - 1].querySelector('.content').textContent.includes(last)) resolve();
      else requestAnimationFrame(look); };
    look(); });
  await frame();
  const first = performance.now() - t0;
  while (document.querySelectorAll('#messages .msg').length < count) await frame();
  await frame();
  const t1 = performance.now();
  const long = window.__long.filter(([s]) => s >= t0 && s <= t1).map(([, d]) => d);
  return {first, all: t1 - t0, longest: Math.max(0, ...long)};
}"""

# Frame gaps from now on.
WATCH_FRAMES = """() => { window.__gaps = []; let last = performance.now();
  const tick = (now) => { window.__gaps.push(now - last); last = now;
    if (!window.__stopFrames) requestAnimationFrame(tick); };
  window.__stopFrames = false; requestAnimationFrame(tick); }"""

LONG_REPLY_MARK = "tok"


def long_conversation(count: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for i in range(count // 2):
        messages.append(
            {"id": f"long-u{i}", "role": "user", "content": f"Question {i}: how?", "createdAt": i}
        )
        messages.append(
            {
                "id": f"long-a{i}",
                "role": "assistant",
                "status": "done",
                "createdAt": i,
                "content": f"Answer **{i}**, in steps:\n\n1. first\n2. then `code`\n\n```python\nprint({i})\n```\n\nDone {i}.",
            }
        )
    return {
        "id": "long",
        "title": "A long one",
        "createdAt": 1,
        "updatedAt": 1,
        "settings": {},
        "messages": messages,
    }


def ready(page: Page, path: str) -> None:
    page.goto(path)
    page.wait_for_selector("body[data-ready]", state="attached", timeout=60_000)


class Subject:
    """One service under measurement, and its browser context."""

    def __init__(self, name: str, url: str, context: BrowserContext, long: dict[str, Any]) -> None:
        self.name = name
        self.long = long
        self.url = url
        self.context = context
        self.page = context.new_page()
        self.results: dict[str, list[Any]] = {"switch": [], "draw": [], "stream": []}

    def seed(self, conversations: int) -> None:
        ready(self.page, self.url + "/")
        self.page.evaluate("localStorage.clear()")
        self.page.evaluate(SEED_MANY, [conversations, 3, "quartchat.v1.", "", 1])
        self.page.evaluate(
            """(c) => { localStorage.setItem('quartchat.v1.c.long', JSON.stringify(c));
                        const index = JSON.parse(localStorage.getItem('quartchat.v1.index'));
                        index.push({id: c.id, title: c.title, updatedAt: c.updatedAt});
                        localStorage.setItem('quartchat.v1.index', JSON.stringify(index)); }""",
            self.long,
        )

    def switches(self, conversations: int, count: int) -> None:
        ready(self.page, self.url + "/")
        self.page.evaluate(WATCH_LONG_TASKS)
        newest = conversations - 1
        for k in range(count + 1):
            i = newest - (k * 7) % 40
            outcome = self.page.evaluate(SWITCH, [f"c{i:05}", f"Question 0 of {i}"])
            if k:  # the first one also pays for loading what the page had not yet
                self.results["switch"].append(outcome)

    def draw(self, count: int) -> None:
        ready(self.page, self.url + "/#c00000")
        self.page.evaluate(WATCH_LONG_TASKS)
        last = f"Done {count // 2 - 1}."
        self.results["draw"].append(self.page.evaluate(DRAW, ["long", count, last]))

    def stream(self, conversations: int, chunks: int) -> None:
        target = conversations // 2
        ready(self.page, self.url + f"/#c{target:05}")
        self.page.wait_for_selector("#messages .msg")
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("Performance.enable")
        self.page.evaluate(WATCH_LONG_TASKS)
        self.page.evaluate(WATCH_FRAMES)

        def busy() -> float:
            metrics = cdp.send("Performance.getMetrics")["metrics"]
            return float(next(m["value"] for m in metrics if m["name"] == "TaskDuration"))

        replies = int(self.page.locator("#messages .msg.assistant").count())
        before = busy()
        t0 = time.perf_counter()
        start = float(self.page.evaluate("performance.now()"))
        self.page.get_by_label("Message", exact=True).fill("stream please")
        self.page.get_by_label("Message", exact=True).press("Enter")
        self.page.wait_for_function(
            "([replies, n]) => { const r = document.querySelectorAll('#messages .msg.assistant');"
            " const last = r[r.length - 1];"
            " return r.length > replies && !last.classList.contains('streaming')"
            " && (last.querySelector('.content').textContent.match(/tok/g) || []).length >= n; }",
            arg=[replies, chunks],
            timeout=120_000,
            polling=100,
        )
        seconds = time.perf_counter() - t0
        spent = busy() - before
        self.page.evaluate("window.__stopFrames = true")
        long = [d for s, d in self.page.evaluate("window.__long") if s >= start]
        gaps = self.page.evaluate("window.__gaps")
        self.results["stream"].append(
            {
                "seconds": seconds,
                "longest": max(long, default=0.0),
                "long_tasks": len(long),
                "max_frame_gap": max(gaps, default=0.0),
                "busy_ms_per_s": 1000 * spent / seconds,
            }
        )
        cdp.detach()


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        if ordered
        else float("nan")
    )


def summary(subject: Subject) -> dict[str, Any]:
    switch = subject.results["switch"]
    draw = subject.results["draw"]
    stream = subject.results["stream"]
    return {
        "switch_ms_median": med([s["ms"] for s in switch]),
        "switch_ms_p95": p95([s["ms"] for s in switch]),
        "switch_longest_task_ms": max((s["longest"] for s in switch), default=0.0),
        "draw_first_ms": med([d["first"] for d in draw]),
        "draw_all_ms": med([d["all"] for d in draw]),
        "draw_longest_task_ms": max((d["longest"] for d in draw), default=0.0),
        "stream_longest_task_ms": max((s["longest"] for s in stream), default=0.0),
        "stream_long_tasks": med([s["long_tasks"] for s in stream]),
        "stream_max_frame_gap_ms": med([s["max_frame_gap"] for s in stream]),
        "stream_busy_ms_per_s": med([s["busy_ms_per_s"] for s in stream]),
        "runs": subject.results,
    }


ROWS = [
    ("switch_ms_median", "switch, median", True),
    ("switch_ms_p95", "switch, p95", True),
    ("switch_longest_task_ms", "longest task while switching", True),
    ("draw_first_ms", "long conversation: latest messages shown", True),
    ("draw_all_ms", "long conversation: all drawn", True),
    ("draw_longest_task_ms", "longest task while drawing", True),
    ("stream_longest_task_ms", "streaming: longest task", True),
    ("stream_long_tasks", "streaming: tasks over 50 ms", False),
    ("stream_max_frame_gap_ms", "streaming: longest gap between frames", True),
    ("stream_busy_ms_per_s", "streaming: main thread busy, ms per s", False),
]


def print_table(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, load: Sequence[float]
) -> None:
    names = list(results)
    head = f"{'':44}" + "".join(f"{n:>26}" for n in names)
    print(f"\n{args.conversations:,} conversations; a {args.messages:,}-message conversation; "
          f"a reply of {args.chunks} chunks {args.interval * 1000:.0f} ms apart; "
          f"{args.repeat} run(s); load average {load[0]:.1f} before, {load[1]:.1f} after "
          f"({os.cpu_count()} CPUs)\n")  # fmt: skip
    print(head)
    for key, label, is_ms in ROWS:
        cells = "".join(
            f"{results[n][key]:>23.0f} ms" if is_ms else f"{results[n][key]:>26.1f}" for n in names
        )
        print(f"{label:44}{cells}")
    for name in names:
        met = results[name]["switch_ms_p95"] < TARGET_SWITCH_MS
        print(f"\n{name}: a switch under {TARGET_SWITCH_MS:.0f} ms at "
              f"{args.conversations:,} conversations (p95): {'met' if met else 'NOT met'}")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--baseline-ref", default=None, metavar="REF", help="also measure the page of commit REF")
    add("--conversations", type=int, default=1000)
    add("--switches", type=int, default=20)
    add("--messages", type=int, default=2000)
    add("--chunks", type=int, default=200, help="chunks of the streamed reply")
    add("--interval", type=float, default=0.02, help="seconds between chunks")
    add("--repeat", type=int, default=3)
    add("--json", type=Path, default=None, metavar="PATH")
    add("--outdir", type=Path, default=ROOT / "artifacts" / "bench")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load = [os.getloadavg()[0]]
    atexit.register(stop_children)
    logdir = args.outdir / f"sidebar-logs-{time.strftime('%Y%m%d-%H%M%S')}"
    logdir.mkdir(parents=True, exist_ok=True)
    upstream_port = free_port()
    fake = spawn(
        "upstream",
        upstream_argv("tests", upstream_port, args.chunks, args.interval),
        None,
        child_env(),
        logdir,
    )
    wait_for_port(fake, upstream_port)
    upstream = f"http://{HOST}:{upstream_port}/v1"
    services = {"after (working tree)": start_page_service("service", upstream, logdir, None)}
    if args.baseline_ref:
        baseline = materialise_baseline(args.baseline_ref, args.outdir)
        label = f"before ({args.baseline_ref} {baseline.commit[:7]})"
        services = {
            label: start_page_service("baseline", upstream, logdir, baseline.tree),
            **services,
        }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        long = long_conversation(args.messages)
        subjects = [
            Subject(name, url, browser.new_context(viewport={"width": 1280, "height": 800}), long)
            for name, url in services.items()
        ]
        for subject in subjects:
            subject.seed(args.conversations)
        for run in range(args.repeat):
            order = subjects if run % 2 == 0 else subjects[::-1]
            for subject in order:
                print(f"run {run + 1}: {subject.name}", file=sys.stderr, flush=True)
                subject.switches(args.conversations, args.switches)
                subject.draw(args.messages)
                subject.stream(args.conversations, args.chunks)
        results = {s.name: summary(s) for s in subjects}
        browser.close()
    load.append(os.getloadavg()[0])
    print_table(results, args, load)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) for k, v in vars(args).items()}
        document = {"args": settings, "load": load, "results": results}
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
