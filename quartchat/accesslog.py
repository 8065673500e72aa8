"""One structured log line per request, written when the response is complete."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .streaming.completion import Completion

log = logging.getLogger("quartchat.access")

QUIET_PATHS = frozenset({"/health"})


@dataclass(slots=True)
class AccessRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    upstream_status: int | None = None
    ttft_ms: float | None = None
    usage: dict[str, int] | None = None
    outcome: str | None = None  # streams only: done / error / shutdown / disconnected
    user_id: int | None = None  # who asked, when accounts are on
    streaming: bool = False
    rule: str = ""  # the route's template (Quart's url_rule), never the raw path; "" for none
    # Told of the request once its status is known (usage/metrics.py counts it there).
    observer: Callable[[AccessRecord], None] | None = None

    # The relay's observer (streaming/relay.py): a stream logs itself when it ends.

    def opened(self, upstream_status: int, completion: Completion) -> None:
        self.upstream_status = upstream_status

    def first_output(self) -> None:
        self.ttft_ms = round((time.perf_counter() - self.started) * 1000, 1)

    async def ended(self, outcome: str, completion: Completion, error: object = None) -> None:
        self.outcome = outcome
        self.usage = completion.usage
        self.status = 200
        self.emit()

    def emit(self) -> None:
        # Never the messages, the key, or upstream text: only what an operator needs to see.
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 1),
            "upstream_status": self.upstream_status,
            "ttft_ms": self.ttft_ms,
            "tokens": self.usage,
            "user_id": self.user_id,
        }
        if self.outcome:
            line["outcome"] = self.outcome
        if self.observer is not None:
            self.observer(self)
        # Health checks (Docker's every 10 s, a load balancer's every second) would drown the log;
        # a failing one is still worth a line.
        level = logging.DEBUG if self.path in QUIET_PATHS and self.status == 200 else logging.INFO
        log.log(level, orjson.dumps(line).decode())
