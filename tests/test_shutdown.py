"""Graceful shutdown: SIGTERM drains streams for SHUTDOWN_GRACE_SECONDS, then ends them cleanly."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import psutil
import pytest
from quart import Quart

from quartchat.app import create_app
from quartchat.streaming.watch import LiveStreams

from .conftest import CHAT, SERVERS, assert_error, make_settings, parse_events
from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import Service


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """The tests here that run the service run on each server."""
    return str(request.param)


def _streams(app: Quart) -> LiveStreams:
    streams: LiveStreams = app.extensions["streams"]
    return streams


async def test_drain_ends_a_running_stream_with_an_error_event_and_closes_the_upstream(
    fake: FakeUpstream,
) -> None:
    fake.reply_with(_slow_reply(words=100, delay=0.05))
    app = create_app(make_settings(openai_api_base=fake.url))
    async with app.test_app() as test_app:
        asyncio.get_running_loop().call_later(0.3, _streams(app).drain, 0.2)
        response = await test_app.test_client().post("/api/chat/stream", json=CHAT)
        events = parse_events(await response.get_data())
    texts = [data["delta"] for kind, data in events if kind == "chunk"]
    assert len(texts) >= 2, "the stream should go on during the grace period"
    assert len(texts) < 100
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "SERVER_SHUTTING_DOWN"
    assert fake.wait_for_disconnect(timeout=5) is not None
    assert len(_streams(app)) == 0


async def test_new_chats_are_refused_once_draining(app: Quart) -> None:
    _streams(app).drain(60)
    client = app.test_client()
    for path in ("/api/chat", "/api/chat/stream"):
        response = await client.post(path, json=CHAT)
        assert_error(response.status_code, await response.get_data(), 503, "SERVER_SHUTTING_DOWN")
    assert (await client.get("/health")).status_code == 200


# -- the real process: python -m quartchat, signals from outside --------------------------------


def _slow_reply(words: int, delay: float) -> Reply:
    return Reply(chunks=completion_chunks([f"w{i} " for i in range(words)]), delay=delay)


def _stream_with_sigterm(service: Service) -> tuple[list[tuple[str, object]], float]:
    """Start a stream, SIGTERM the service after its first chunk; the events and the time after."""
    assert service.process is not None
    with httpx.stream("POST", service.url + "/api/chat/stream", json=CHAT, timeout=30) as response:
        assert response.status_code == 200
        raw = b""
        chunks = response.iter_raw()
        while b"event: chunk" not in raw:
            raw += next(chunks)
        service.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for piece in chunks:
            raw += piece
    return parse_events(raw), time.monotonic() - signalled


@pytest.mark.e2e
def test_sigterm_drains_then_ends_a_long_stream_with_an_error_event(
    fake: FakeUpstream, server: str
) -> None:
    fake.reply_with(_slow_reply(words=200, delay=0.05))  # ~10 s: longer than the grace
    with Service(fake.url, SERVER=server, SHUTDOWN_GRACE_SECONDS="1") as service:
        assert service.process is not None
        events, took = _stream_with_sigterm(service)
        chunks = [e for e in events if e[0] == "chunk"]
        assert len(chunks) > 3, "in-flight streams go on during the grace period"
        assert events[-1][0] == "error"
        assert events[-1][1]["error"]["code"] == "SERVER_SHUTTING_DOWN"  # type: ignore[index]
        assert 0.8 < took < 6
        assert service.process.wait(10) == 0
        assert fake.wait_for_disconnect(timeout=5) is not None
        assert '"outcome":"shutdown"' in service.log()


@pytest.mark.e2e
def test_sigterm_lets_a_stream_within_the_grace_period_finish(
    fake: FakeUpstream, server: str
) -> None:
    fake.reply_with(_slow_reply(words=20, delay=0.05))  # ~1 s
    with Service(fake.url, SERVER=server, SHUTDOWN_GRACE_SECONDS="10") as service:
        assert service.process is not None
        events, _ = _stream_with_sigterm(service)
        assert events[-1][0] == "done"
        assert events[-1][1]["message"]["content"] == "".join(f"w{i} " for i in range(20))  # type: ignore[index]
        # It exits as soon as the last stream is done, not at the end of the grace period.
        assert service.process.wait(5) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(service.url + "/health", timeout=2)


@pytest.mark.e2e
def test_workers_share_the_port_and_all_drain_on_sigterm(fake: FakeUpstream, server: str) -> None:
    fake.reply_with(_slow_reply(words=200, delay=0.05))
    with Service(fake.url, SERVER=server, APP_WORKERS="2", SHUTDOWN_GRACE_SECONDS="1") as service:
        assert service.process is not None
        workers = psutil.Process(service.process.pid).children()
        assert len(workers) == 2
        for _ in range(4):
            assert httpx.get(service.url + "/health").status_code == 200
        events, _ = _stream_with_sigterm(service)
        assert events[-1][1]["error"]["code"] == "SERVER_SHUTTING_DOWN"  # type: ignore[index]
        assert service.process.wait(10) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


@pytest.mark.e2e
def test_a_second_sigterm_ends_the_streams_at_once(fake: FakeUpstream, server: str) -> None:
    fake.reply_with(_slow_reply(words=200, delay=0.05))
    with Service(fake.url, SERVER=server, SHUTDOWN_GRACE_SECONDS="60") as service:
        assert service.process is not None
        with httpx.stream("POST", service.url + "/api/chat/stream", json=CHAT, timeout=30) as got:
            raw = b""
            chunks = got.iter_raw()
            while b"event: chunk" not in raw:
                raw += next(chunks)
            service.process.send_signal(signal.SIGTERM)
            while raw.count(b"event: chunk") < 3:  # draining: the stream goes on
                raw += next(chunks)
            service.process.send_signal(signal.SIGTERM)
            for piece in chunks:
                raw += piece
        events = parse_events(raw)
        assert events[-1][1]["error"]["code"] == "SERVER_SHUTTING_DOWN"
        assert len(events) < 100  # long before the reply's 200 words or the 60 s grace
        assert service.process.wait(10) == 0
