"""One metered request: who asked which upstream for which model, and how it went.

Every request that reaches (or tries to reach) an upstream -- a page turn, `/api/chat*`, `/v1/*`
-- gets a `Meter`, the relay's observer (streaming/relay.py), made by blueprints/admission.py.
When the request is over the meter builds one `Record` and hands it to each `Sink`: the usage
ledger, metrics, the user's budget. Nothing here runs per chunk: a stream's meter is told when it
opens, when its first output goes out and when it ends, as the access log is.

Sinks are synchronous and must not raise or wait: the ledger queues the row for its next flush,
metrics add to counters, the budget settles what it reserved.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from ..errors import APIError
from ..streaming.completion import Completion
from ..streaming.relay import Observer

log = logging.getLogger("quartchat")
T = TypeVar("T")

CHARS_PER_TOKEN = 4
"""The estimate's rule when the upstream says nothing of usage: about four characters a token
(OpenAI's own rule of thumb for English)."""


class Price(NamedTuple):
    """What a model costs, in US dollars per million tokens."""

    input_per_million: float
    output_per_million: float

    def micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The cost of that many tokens in millionths of a dollar (rounded, never negative)."""
        dollars_e6 = prompt_tokens * self.input_per_million + (
            completion_tokens * self.output_per_million
        )
        return max(0, round(dollars_e6))


@dataclass(slots=True)
class Request:
    """What is known of a request when it is admitted (labels only: never its text)."""

    route: str  # page | api | v1.chat | v1.embeddings
    request_id: str
    user_id: int | None
    token_id: int | None
    upstream: str = ""
    model: str = ""
    prompt_chars: int = 0  # for the estimate when the upstream reports no usage
    max_tokens: int | None = None  # what the request asked at most (budgets reserve it)
    price: Price | None = None
    reserved: int = 0  # tokens the budget reserved at admission (usage/budgets.py)
    started: float = field(default_factory=time.perf_counter)
    at_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


class Record(NamedTuple):
    """How one request went, as every sink receives it (a tuple: made once per request, it
    costs a quarter of a frozen dataclass)."""

    request: Request
    outcome: str  # "ok", an error code, "disconnected" or "shutdown"
    status: int  # the HTTP status it was answered with (200 for a stream that began)
    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the tokens are our estimate: the upstream reported none
    ttft_ms: int | None
    duration_ms: int
    cost_micros: int | None  # None: the model has no price

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Sink(Protocol):
    """Who keeps count: the ledger, metrics, budgets."""

    def started(self, request: Request) -> None:
        """A request was admitted and is going to the upstream."""

    def record(self, record: Record) -> None:
        """A request is over (once per request). Must not raise or wait."""


class Meter:
    """The relay's observer for one request: it passes every call on to `then` and, once, tells
    the sinks how the request went."""

    __slots__ = ("_done", "_sinks", "_status", "_ttft_ms", "request", "then")

    def __init__(self, request: Request, sinks: tuple[Sink, ...], then: Observer | None) -> None:
        self.request = request
        self.then = then
        self._sinks = sinks
        self._status = 200
        self._ttft_ms: int | None = None
        self._done = False
        for sink in sinks:
            _safely(sink.started, request)

    def opened(self, upstream_status: int, completion: Completion) -> None:
        if self.then is not None:
            self.then.opened(upstream_status, completion)

    def first_output(self) -> None:
        self._ttft_ms = self._elapsed_ms()
        if self.then is not None:
            self.then.first_output()

    async def ended(self, outcome: str, completion: Completion, error: APIError | None) -> None:
        if outcome == "done":
            said = "ok"
        elif error is not None:
            said = error.code
        else:
            said = outcome
        self.record(said, 200, completion)
        if self.then is not None:
            await self.then.ended(outcome, completion, error)

    async def failed(self, error: APIError) -> None:
        """The request ended before any stream began (refused, or the upstream failed)."""
        self.record(error.code, error.status_code, None)
        forward = getattr(self.then, "failed", None)
        if forward is not None:  # a reply's writer records the failure on the reply
            await forward(error)

    def record(self, outcome: str, status: int, completion: Completion | None) -> None:
        """Tell the sinks, once: later calls do nothing."""
        if self._done:
            return
        self._done = True
        request = self.request
        usage = completion.usage if completion is not None else None
        estimated = False
        if usage is not None:
            prompt = usage.get("prompt_tokens", 0)
            output = usage.get("completion_tokens", 0)
        elif completion is not None and (completion.parts or outcome == "ok"):
            # The upstream reported nothing (no `stream_options`, or a server that never counts):
            # the text that went through, by the rule of thumb, flagged as an estimate.
            estimated = True
            prompt = math.ceil(request.prompt_chars / CHARS_PER_TOKEN)
            output = math.ceil(sum(map(len, completion.parts)) / CHARS_PER_TOKEN)
        else:
            prompt = output = 0
        price = request.price
        record = Record(
            request,
            outcome,
            status,
            prompt,
            output,
            estimated,
            self._ttft_ms,
            self._elapsed_ms(),
            price.micros(prompt, output) if price is not None else None,
        )
        for sink in self._sinks:
            _safely(sink.record, record)

    def _elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.request.started) * 1000)


def _safely(call: Callable[[T], None], argument: T) -> None:
    # A sink's bug must not end a reply or lose the other sinks' counts; its type is logged.
    try:
        call(argument)
    except Exception as exc:
        log.error("a usage sink failed: %s", type(exc).__name__)
