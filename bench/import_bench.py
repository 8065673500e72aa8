#!/usr/bin/env python
"""Imports at their worst (issue 16): does the service stay responsive, and what does it hold?

    .venv/bin/python bench/import_bench.py            # about a minute
    .venv/bin/python bench/import_bench.py --json artifacts/bench/import.json

Starts the service (`python -m quartchat`, one worker, accounts on SQLite in a temporary
DATA_DIR, IMPORT_BYTES_PER_DAY raised so that the quota does not refuse the runs), logs in as the
first admin, then posts each file below to `POST /api/import` while two probes run on their own
connections: `GET /health` every 20 ms, and `POST /api/conversations` (a write: it waits for
SQLite's lock whenever the import holds it) every 50 ms. For each file it prints the import's
duration and status, the probes' latency (p50, p99, max: target under 100 ms for `/health`),
errors seen by the probes, and the service's resident memory before and at its peak (sampled from
/proc every 10 ms) against the body's size (target: at most 3x the body above the start).

Files: ChatGPT's format with 400 kept nodes under a chain of 39,600 empty ones (the quadratic
walk); our format with 12,000 messages in reverse order (the quadratic placement, and the one
long transaction); 20 MB of `[{},{},...]` (the memory blow-up); and a realistic 48 MB ChatGPT
export (1,000 conversations of 50 nodes) for scale.

A script, not a test: it prints figures and exits 0 unless the harness failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ADMIN_EMAIL = "bench@example.com"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def chatgpt_chain(chain: int = 39_600, kept: int = 400) -> bytes:
    mapping: dict[str, Any] = {}
    for i in range(kept):
        mapping[f"k{i}"] = {
            "parent": f"c{chain - 1}",
            "message": {"author": {"role": "user"}, "content": {"parts": [f"kept {i}"]}},
        }
    for i in range(chain):
        mapping[f"c{i}"] = {"parent": f"c{i - 1}" if i else None, "message": None}
    return orjson.dumps([{"id": "deep", "title": "deep", "mapping": mapping}])


def ours_reversed(count: int = 12_000) -> bytes:
    messages = [
        {
            "id": f"m{i}",
            "parentId": f"m{i - 1}" if i else None,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i}",
            "createdAt": 1_700_000_000_000 + i,
        }
        for i in range(count)
    ]
    conversation = {"id": "long", "title": "long", "messages": messages[::-1]}
    return orjson.dumps({"format": "quartchat", "version": 1, "conversations": [conversation]})


def empty_objects(size: int = 20 * 1024 * 1024) -> bytes:
    return b"[" + b",".join([b"{}"] * (size // 3)) + b"]"


def realistic(conversations: int = 1_000, nodes: int = 50) -> bytes:
    def node(i: int, j: int) -> dict[str, Any]:
        return {
            "id": f"n{i}-{j}",
            "message": {
                "id": f"n{i}-{j}",
                "author": {"role": "user" if j % 2 else "assistant", "name": None, "metadata": {}},
                "create_time": 1_700_000_000.0 + j,
                "content": {"content_type": "text", "parts": ["hello world " * 40]},
                "status": "finished_successfully",
                "metadata": {"timestamp_": "absolute", "message_type": None},
                "recipient": "all",
            },
            "parent": f"n{i}-{j - 1}" if j else None,
            "children": [f"n{i}-{j + 1}"],
        }

    return orjson.dumps(
        [
            {
                "id": f"c{i}",
                "title": f"conversation {i}",
                "create_time": 1_700_000_000.0,
                "current_node": f"n{i}-{nodes - 1}",
                "mapping": {f"n{i}-{j}": node(i, j) for j in range(nodes)},
            }
            for i in range(conversations)
        ]
    )


class Service:
    def __init__(self, data_dir: Path, password: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "APP_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            APP_HOST=HOST,
            APP_PORT=str(self.port),
            DATA_DIR=str(data_dir),
            OPENAI_API_BASE="http://127.0.0.1:9/v1",
            ADMIN_EMAIL=ADMIN_EMAIL,
            ADMIN_PASSWORD=password,
            IMPORT_BYTES_PER_DAY=str(10 * 1024**3),
            LOG_LEVEL="WARNING",
        )
        self.log = open(data_dir / "service.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "quartchat"], env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(self.port, "GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"the service did not start: see {data_dir / 'service.log'}")

    def rss(self) -> int:
        pids = [self.popen.pid]
        children = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total = max(total, int(line.split()[1]) * 1024)
        return total

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(30)
        self.log.close()


def call(
    port: int, method: str, path: str, body: bytes | None = None, cookie: str = ""
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=600)
    headers = {"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class Probe(threading.Thread):
    """Requests one after the other, `gap` apart, on a keep-alive connection, until stopped."""

    def __init__(self, port: int, method: str, path: str, gap: float, cookie: str) -> None:
        super().__init__(daemon=True)
        self.port, self.method, self.path, self.gap, self.cookie = port, method, path, gap, cookie
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        headers = {"Content-Type": "application/json", "Cookie": self.cookie}
        body = b'{"title": "probe"}' if self.method == "POST" else None
        while not self.stopping.is_set():
            start = time.perf_counter()
            connection.request(self.method, self.path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            self.latencies.append((time.perf_counter() - start) * 1000)
            if response.status >= 400:
                self.errors[response.status] = self.errors.get(response.status, 0) + 1
            self.stopping.wait(self.gap)
        connection.close()

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]
        return {
            "count": len(self.latencies),
            "p50_ms": round(statistics.median(ordered), 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
            "max_ms": round(ordered[-1], 1),
            "errors": self.errors,
        }


def run_case(service: Service, cookie: str, name: str, raw: bytes) -> dict[str, Any]:
    health = Probe(service.port, "GET", "/health", 0.02, cookie)
    writes = Probe(service.port, "POST", "/api/conversations", 0.05, cookie)
    before = service.rss()
    peak = before
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, service.rss())
            sampling.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    health.start()
    writes.start()
    start = time.perf_counter()
    status, _, body = call(service.port, "POST", "/api/import", raw, cookie)
    seconds = time.perf_counter() - start
    for thread in (health, writes):
        thread.stopping.set()
        thread.join()
    sampling.set()
    sampler.join()
    result = orjson.loads(body) if status == 200 else body[:200].decode(errors="replace")
    return {
        "file": name,
        "body_mib": round(len(raw) / 2**20, 2),
        "status": status,
        "seconds": round(seconds, 2),
        "result": {k: v for k, v in result.items() if k != "problems"}
        if isinstance(result, dict)
        else result,
        "health": health.figures(),
        "other_writes": writes.figures(),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "rss_added_over_body": round((peak - before) / len(raw), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    files = {
        "chatgpt chain 40,000 nodes / 400 kept": chatgpt_chain(),
        "ours, 12,000 messages in reverse order": ours_reversed(),
        "20 MB of [{},{},...]": empty_objects(),
        "realistic ChatGPT export, 1,000 x 50 nodes": realistic(),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="import-bench-"))
    password = secrets.token_urlsafe(12)
    service = Service(data_dir, password)
    try:
        login = orjson.dumps({"email": ADMIN_EMAIL, "password": password})
        status, headers, body = call(service.port, "POST", "/api/auth/login", login)
        if status != 200:
            raise SystemExit(f"login answered {status}: {body[:200]!r}")
        cookie = headers["set-cookie"].split(";", 1)[0]
        results = [run_case(service, cookie, name, raw) for name, raw in files.items()]
    finally:
        service.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    for r in results:
        h, w = r["health"], r["other_writes"]
        print(
            f"\n{r['file']} ({r['body_mib']} MiB): {r['status']} in {r['seconds']} s {r['result']}"
        )
        print(
            f"  /health   n={h['count']:4} p50 {h['p50_ms']:6} ms  p99 {h['p99_ms']:6} ms  "
            f"max {h['max_ms']:6} ms  errors {h['errors']}  (target: max < 100 ms)"
        )
        print(
            f"  a write   n={w['count']:4} p50 {w['p50_ms']:6} ms  p99 {w['p99_ms']:6} ms  "
            f"max {w['max_ms']:6} ms  errors {w['errors']}"
        )
        print(
            f"  RSS {r['rss_before_mib']} -> {r['rss_peak_mib']} MiB: "
            f"+{r['rss_added_over_body']} x the body (target: <= 3)"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
