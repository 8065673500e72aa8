"""The relay's observer, the access record: what one stream's access line says when it ends.

The times come from a clock the test sets, so the figures are exact (nothing depends on how fast
the machine is).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from quartchat import accesslog
from quartchat.accesslog import AccessRecord
from quartchat.streaming.completion import Completion


class Clock:
    """Stands in for the access log's `time`."""

    def __init__(self, now: float) -> None:
        self.now = now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(100.0)
    monkeypatch.setattr(accesslog, "time", clock)
    return clock


def the_line(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    (record,) = [r for r in caplog.records if r.name == "quartchat.access"]
    line: dict[str, Any] = orjson.loads(record.getMessage())
    return line


async def test_a_stream_s_line_has_its_first_output_and_duration_in_milliseconds(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quartchat.access")
    record = AccessRecord("req-1", "POST", "/api/chat/stream", started=100.0)
    record.opened(200, Completion("m"))
    clock.now = 100.12344
    record.first_output()
    clock.now = 101.56789
    await record.ended("done", Completion("m"))
    line = the_line(caplog)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/chat/stream", 200)
    assert (line["ttft_ms"], line["duration_ms"]) == (123.4, 1567.9)
    assert line["outcome"] == "done"
