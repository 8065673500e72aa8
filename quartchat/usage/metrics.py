"""The app's Prometheus metrics (served by blueprints/metrics.py as `GET /metrics`).

Three things feed them, each once per request and never per chunk:
- the usage meter (usage/meter.py): `Metrics` is a `Sink`, told when a metered request starts
  (in flight) and how it went (time to first token, duration, tokens, upstream errors, refusals);
- the access record (accesslog.py): every request's route template and status, when its line is
  written (`Metrics.access`);
- the database's batched writer (db/writer.py): how long each write transaction took
  (`Metrics.db_write`).

The metrics live on a registry of the app's own, not prometheus_client's global one: each app
(and each test's app) counts alone. With several worker processes (`python -m quartchat`,
APP_WORKERS > 1) every process writes its values to files in `PROMETHEUS_MULTIPROC_DIR`, and a
scrape, answered by whichever worker, adds up the files of all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ..accesslog import AccessRecord
from ..adapters.prometheus import use_multiprocess_values
from .meter import Record, Request

REFUSED = frozenset({"RATE_LIMITED", "TOO_MANY_STREAMS"})
"""Outcomes that are a limit's refusal at admission (blueprints/admission.py)."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the `handler` of a request no route matched (a 404 by path)

# Seconds. A first token comes within a second or two from a hosted model, later from a large
# local one; a whole reply takes up to MAX_REPLY_SECONDS (600 by default).
TTFT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DB_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class RouteSeries(NamedTuple):
    """One route's series, looked up once: `labels()` costs about as much as the addition."""

    in_flight: Any
    ttft: Any
    duration: Any


class Metrics:
    """The app's metrics, and a `Sink` of the usage meter."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None:
            use_multiprocess_values(multiprocess_dir)
        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.http_requests = Counter(
            "quartchat_http_requests",
            "Requests answered, by method, route template (handler) and HTTP status.",
            ["method", "handler", "status"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "quartchat_requests_in_flight",
            "Metered requests (to an upstream) admitted and not yet over, streams included.",
            ["route"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ttft = Histogram(
            "quartchat_time_to_first_token_seconds",
            "From a metered request's arrival to the first output sent to its client.",
            ["route"],
            registry=registry,
            buckets=TTFT_BUCKETS,
        )
        self.duration = Histogram(
            "quartchat_request_duration_seconds",
            "From a metered request's arrival to its end, for those that reached the upstream.",
            ["route"],
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.tokens = Counter(
            "quartchat_tokens",
            "Tokens by model and kind (prompt or completion); estimated when the upstream "
            "reported none.",
            ["model", "kind"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "quartchat_upstream_errors",
            "Metered requests that ended in an upstream's error, by upstream and error code.",
            ["upstream", "code"],
            registry=registry,
        )
        self.refused = Counter(
            "quartchat_limits_refused",
            "Requests refused by a limit at admission, by error code.",
            ["code"],
            registry=registry,
        )
        self.db_writes = Histogram(
            "quartchat_db_write_seconds",
            "Batched database write transactions (db/writer.py), from BEGIN to COMMIT.",
            registry=registry,
            buckets=DB_WRITE_BUCKETS,
        )
        self._routes: dict[str, RouteSeries] = {}
        self._tokens: dict[str, tuple[Any, Any]] = {}
        self._requests: dict[tuple[str, str, int | None], Any] = {}
        if multiprocess_dir is None:
            self.exposed = registry
        else:
            # The scrape reads every process's files; this process's own values are among them
            # (so `registry` itself is not exposed: they would count twice).
            self.exposed = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(self.exposed, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]

    # The usage meter's sink (usage/meter.py): a few dictionary lookups and additions.

    def started(self, request: Request) -> None:
        self._route(request.route).in_flight.inc()

    def record(self, record: Record) -> None:
        request = record.request
        series = self._route(request.route)
        series.in_flight.dec()
        outcome = record.outcome
        if outcome in REFUSED:
            self.refused.labels(outcome).inc()
            return
        upstream_error = outcome.startswith("UPSTREAM_")
        if upstream_error:
            self.upstream_errors.labels(request.upstream, outcome).inc()
        if record.status == 200 or upstream_error:  # it reached the upstream
            series.duration.observe(record.duration_ms / 1000)
        if record.ttft_ms is not None:
            series.ttft.observe(record.ttft_ms / 1000)
        # Only models that answered get a series: a name an upstream refused adds none, so a
        # client inventing model names cannot grow the scrape.
        if record.prompt_tokens or record.completion_tokens:
            tokens = self._tokens.get(request.model)
            if tokens is None:
                model = request.model
                tokens = self._tokens[model] = (
                    self.tokens.labels(model, "prompt"),
                    self.tokens.labels(model, "completion"),
                )
            tokens[0].inc(record.prompt_tokens)
            tokens[1].inc(record.completion_tokens)

    def _route(self, route: str) -> RouteSeries:
        series = self._routes.get(route)
        if series is None:
            series = self._routes[route] = RouteSeries(
                self.in_flight.labels(route), self.ttft.labels(route), self.duration.labels(route)
            )
        return series

    # The access record's observer (accesslog.py): every request, once its status is known.

    def access(self, access: AccessRecord) -> None:
        method = access.method if access.method in METHODS else "other"
        key = (method, access.rule, access.status)
        series = self._requests.get(key)
        if series is None:  # once per method, route and status: a bounded set
            handler = access.rule or UNMATCHED
            series = self.http_requests.labels(method, handler, str(access.status or 0))
            self._requests[key] = series
        series.inc()

    # The database writer's observer (db/writer.py); called from SQLite's writer thread too.

    def db_write(self, seconds: float) -> None:
        self.db_writes.observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (all processes', in multiprocess mode)."""
        return generate_latest(self.exposed)
