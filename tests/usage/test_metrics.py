"""GET /metrics: what a request moves, who may read it, and several workers adding up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart
from quart.typing import TestClientProtocol as Client

from ..conftest import CHAT, LiveClient, assert_error, parse_events
from ..fake_upstream import FakeUpstream, Reply
from ..service import Service
from .conftest import DEADLINE, hanging, streaming

LOOPBACK = {"scope_base": {"client": ("127.0.0.1", 40000)}}
REMOTE = {"scope_base": {"client": ("203.0.113.9", 40000)}}
TOKEN = "metrics-scrape-secret-0123456789"


def value(text: str, sample: str, **labels: str) -> float:
    """The sum of the samples named `sample` whose labels include `labels` (0 if none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


async def scrape(client: Client) -> str:
    response = await client.get("/metrics", **LOOPBACK)
    assert response.status_code == 200, await response.get_data()
    assert response.content_type.startswith("text/plain; version=")
    return await response.get_data(as_text=True)


# -- what a request moves ---------------------------------------------------------------------


async def test_a_streamed_chat_moves_the_request_counter_histograms_and_tokens_by_one_request(
    live: LiveClient,
) -> None:
    async with live() as client:
        before = await scrape(client)
        response = await client.post("/api/chat/stream", json=CHAT, **LOOPBACK)
        events = parse_events(await response.get_data())
        after = await scrape(client)
    usage = events[-1][1]["usage"]
    model = events[-1][1]["model"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    def moved(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    handler = {"method": "POST", "handler": "/api/chat/stream", "status": "200"}
    assert moved("quartchat_http_requests_total", **handler) == 1
    assert moved("quartchat_time_to_first_token_seconds_count", route="api") == 1
    assert moved("quartchat_request_duration_seconds_count", route="api") == 1
    prompt = moved("quartchat_tokens_total", model=model, kind="prompt")
    completion = moved("quartchat_tokens_total", model=model, kind="completion")
    assert (prompt, completion) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert value(after, "quartchat_requests_in_flight", route="api") == 0


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    live: LiveClient,
) -> None:
    async with live() as client:
        await client.get("/no/such/page/1234", **LOOPBACK)
        await client.get("/static/no-such-file-5678.js", **LOOPBACK)
        odd = client.request("/", method="BREW-9012", scope_base=LOOPBACK["scope_base"])
        async with odd as connection:  # any token is a method to HTTP
            await connection.send_complete()
            await connection.receive()
        text = await scrape(client)
    assert "9012" not in text
    assert value(text, "quartchat_http_requests_total", method="other", status="405") == 1
    assert "1234" not in text and "5678" not in text
    assert value(text, "quartchat_http_requests_total", handler="unmatched", status="404") == 1
    static = {"handler": "/static/<path:filename>", "status": "404"}
    assert value(text, "quartchat_http_requests_total", **static) == 1


async def test_a_stream_refused_by_the_per_user_limit_counts_under_limits_refused(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(hanging())
    async with live(max_streams_per_user=1) as client, streaming(client, headers={}):
        refused = await client.post("/api/chat/stream", json=CHAT, **LOOPBACK)
        assert_error(refused.status_code, await refused.get_data(), 429, "TOO_MANY_STREAMS")
        during = await scrape(client)
    assert value(during, "quartchat_limits_refused_total", code="TOO_MANY_STREAMS") == 1
    assert value(during, "quartchat_requests_in_flight", route="api") == 1  # the one held open
    assert value(during, "quartchat_request_duration_seconds_count") == 0  # never went upstream


async def test_an_upstream_error_counts_by_its_code_and_upstream(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(status=500, chunks=[b'{"error": {"message": "boom"}}'], headers={}))
    async with live() as client:
        response = await client.post("/api/chat", json=CHAT, **LOOPBACK)
        body = await response.get_data()
        text = await scrape(client)
    code = (await response.get_json())["error"]["code"]
    assert code.startswith("UPSTREAM_") and response.status_code >= 500, body
    assert value(text, "quartchat_upstream_errors_total", upstream="default", code=code) == 1
    assert value(text, "quartchat_tokens_total") == 0
    assert value(text, "quartchat_requests_in_flight") == 0


# -- who may read it --------------------------------------------------------------------------


async def test_loopback_reads_the_metrics_and_a_remote_client_needs_the_token(
    live: LiveClient,
) -> None:
    async with live(metrics_token=TOKEN) as client:
        assert (await client.get("/metrics", **LOOPBACK)).status_code == 200
        bare = await client.get("/metrics", **REMOTE)
        assert_error(bare.status_code, await bare.get_data(), 401, "UNAUTHENTICATED")
        assert bare.headers["WWW-Authenticate"] == "Bearer"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"}, **REMOTE)
        assert_error(wrong.status_code, await wrong.get_data(), 401, "UNAUTHENTICATED")
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        right = await client.get("/metrics", headers=bearer, **REMOTE)
        assert right.status_code == 200
        assert "quartchat_http_requests_total" in await right.get_data(as_text=True)


async def test_without_a_token_a_remote_client_is_refused_whatever_it_sends(
    live: LiveClient,
) -> None:
    async with live() as client:
        refused = await client.get("/metrics", headers={"Authorization": "Bearer "}, **REMOTE)
        assert_error(refused.status_code, await refused.get_data(), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("trusted", "forwarded_for"),
    [
        ([], "203.0.113.9"),  # a proxy on this host that TRUSTED_PROXIES does not name
        (["127.0.0.1"], "203.0.113.9"),  # a trusted proxy, forwarding from outside
        (["127.0.0.1"], "127.0.0.1, 203.0.113.9"),  # a forged loopback hop before the proxy's
    ],
)
async def test_a_request_forwarded_from_outside_is_not_loopback(
    live: LiveClient, trusted: list[str], forwarded_for: str
) -> None:
    async with live(trusted_proxies=trusted) as client:
        response = await client.get(
            "/metrics", headers={"X-Forwarded-For": forwarded_for}, **LOOPBACK
        )
        assert_error(response.status_code, await response.get_data(), 401, "UNAUTHENTICATED")


async def test_a_trusted_proxy_forwarding_a_loopback_client_is_loopback(
    live: LiveClient,
) -> None:
    async with live(trusted_proxies=["10.0.0.2"]) as client:
        response = await client.get(
            "/metrics",
            headers={"X-Forwarded-For": "127.0.0.1"},
            scope_base={"client": ("10.0.0.2", 40000)},
        )
        assert response.status_code == 200


# -- with accounts ------------------------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """The accounts app of tests/usage/conftest.py, with a metrics token."""
    return {"metrics_token": TOKEN}


async def test_with_accounts_the_token_reaches_the_metrics_without_an_account(
    app: Quart,
) -> None:
    client = app.test_client()
    assert (await client.get("/metrics", **LOOPBACK)).status_code == 200
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.get("/metrics", headers=bearer, **REMOTE)).status_code == 200
    bare = await client.get("/metrics", **REMOTE)
    assert_error(bare.status_code, await bare.get_data(), 401, "UNAUTHENTICATED")


async def test_each_batched_database_write_is_timed(app: Quart) -> None:
    client = app.test_client()
    before = value(await scrape(client), "quartchat_db_write_seconds_count")
    await app.extensions["db"].run(lambda tx: None)
    after = value(await scrape(client), "quartchat_db_write_seconds_count")
    assert after - before == 1


# -- several processes ------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from quartchat.usage.metrics import Metrics
    metrics = Metrics(Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        metrics.refused.labels("RATE_LIMITED").inc()
    """
)


def test_two_processes_counts_add_up_in_the_scrape(tmp_path: Path) -> None:
    """The multiprocess collector over a directory two real processes wrote (as two workers do);
    the app itself with APP_WORKERS=2 is the next test."""
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", WORKER, str(tmp_path), str(count)], check=True)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    script = "import sys; from pathlib import Path; from quartchat.usage.metrics import Metrics;"
    script += "sys.stdout.buffer.write(Metrics(Path(sys.argv[1])).exposition())"
    shown = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], check=True, capture_output=True
    ).stdout.decode()
    assert value(shown, "quartchat_limits_refused_total", code="RATE_LIMITED") == 7


def per_process(directory: Path, handler: str) -> list[float]:
    """Each worker's own count of requests to `handler`, from its file."""
    counts = []
    for path in sorted(directory.glob("counter_*.db")):
        metrics = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        counts.append(
            sum(
                s.value
                for m in metrics
                for s in m.samples
                if s.name == "quartchat_http_requests_total" and s.labels["handler"] == handler
            )
        )
    return counts


def test_the_service_with_two_workers_adds_up_both_workers_counts(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    with Service(fake.url, APP_WORKERS="2", TMPDIR=str(tmp_path)) as service:
        [directory] = tmp_path.glob("quartchat-metrics-*")
        sent = 0
        deadline = time.monotonic() + DEADLINE
        # A new connection each time: the kernel hands each to whichever worker accepts first.
        # (Not /health: the start's own checks went there.)
        while not (len(counts := per_process(directory, "unmatched")) == 2 and min(counts) > 0):
            assert time.monotonic() < deadline, f"one worker took every request: {counts}"
            assert httpx.get(service.url + "/not-a-route").status_code == 404
            sent += 1
        scraped = httpx.get(service.url + "/metrics").text
    assert value(scraped, "quartchat_http_requests_total", handler="unmatched") == sent
    assert not directory.exists()  # removed when the workers are gone
