"""The meter: one record per request, to every sink, whatever the sinks do."""

from __future__ import annotations

import pytest

from quartchat.errors import APIError
from quartchat.streaming.completion import Completion
from quartchat.usage.meter import Meter, Price, Record, Request


class Sink:
    def __init__(self) -> None:
        self.begun: list[Request] = []
        self.records: list[Record] = []

    def started(self, request: Request) -> None:
        self.begun.append(request)

    def record(self, record: Record) -> None:
        self.records.append(record)


class Broken:
    def started(self, request: Request) -> None:
        raise RuntimeError("a bug")

    def record(self, record: Record) -> None:
        raise RuntimeError("a bug")


def request(**labels: object) -> Request:
    return Request("api", "r1", 7, None, upstream="default", model="m", **labels)  # type: ignore[arg-type]


async def test_a_stream_is_recorded_once_with_its_usage_and_cost() -> None:
    sink = Sink()
    meter = Meter(request(price=Price(1.0, 2.0)), (Broken(), sink), None)
    completion = Completion("m")
    completion.usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    meter.first_output()
    await meter.ended("done", completion, None)
    await meter.ended("done", completion, None)  # a second end says nothing more
    [record] = sink.records
    assert (record.outcome, record.status, record.estimated) == ("ok", 200, False)
    assert (record.prompt_tokens, record.completion_tokens) == (1000, 500)
    assert record.cost_micros == 1000 * 1 + 500 * 2
    assert record.ttft_ms is not None
    assert len(sink.begun) == 1


async def test_without_usage_the_tokens_are_estimated_and_flagged() -> None:
    sink = Sink()
    meter = Meter(request(prompt_chars=41), (sink,), None)
    completion = Completion("m")
    completion.parts.extend(["abcd", "efghi"])
    await meter.ended("done", completion, None)
    [record] = sink.records
    assert record.estimated
    assert (record.prompt_tokens, record.completion_tokens) == (11, 3)  # ceil(41/4), ceil(9/4)


async def test_a_failure_before_the_stream_is_recorded_with_its_code_and_status() -> None:
    sink = Sink()
    meter = Meter(request(), (sink,), None)
    await meter.failed(APIError(429, "RATE_LIMITED", "Too many."))
    [record] = sink.records
    assert (record.outcome, record.status, record.total_tokens) == ("RATE_LIMITED", 429, 0)
    assert not record.estimated
    assert record.ttft_ms is None


@pytest.mark.parametrize(
    ("outcome", "code", "said"),
    [("error", "UPSTREAM_ERROR", "UPSTREAM_ERROR"), ("disconnected", None, "disconnected")],
)
async def test_an_ended_stream_says_how_it_ended(outcome: str, code: str | None, said: str) -> None:
    sink = Sink()
    meter = Meter(request(), (sink,), None)
    error = APIError(502, code, "x") if code else None
    await meter.ended(outcome, Completion("m"), error)
    assert sink.records[0].outcome == said
