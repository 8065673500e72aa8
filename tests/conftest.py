from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat import create_app
from quartchat.config import Settings

from .fake_upstream import FakeUpstream
from .service import Service

UPSTREAM = "https://upstream.test/v1"
SECRET = "sk-test-9f8e7d6c5b4a3210SECRET"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sse"  # copies of ../shared/fixtures/sse


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": SECRET,
        "openai_api_base": UPSTREAM,
        "sse_ping_seconds": 15,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    """respx standing in for the upstream; fails the test if a mocked route went uncalled."""
    with respx.mock(base_url=UPSTREAM, assert_all_called=True, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def app(settings: Settings, upstream: respx.MockRouter) -> AsyncIterator[Quart]:
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    async with app.test_app():  # runs the serving lifecycle: the shared client opens and closes
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def _text(body: str | bytes) -> str:
    return body if isinstance(body, str) else body.decode()


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    """A fake OpenAI-compatible upstream on a real socket (tests/fake_upstream.py)."""
    with FakeUpstream() as fake:
        yield fake


LiveClient = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def live(fake: FakeUpstream) -> LiveClient:
    """The app in-process on the production path -- the aiohttp transport, over a real socket to
    `fake` -- as `async with live(**settings) as client`."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Client]:
        app = create_app(make_settings(openai_api_base=fake.url, **overrides))
        async with app.test_app() as test_app:
            yield test_app.test_client()

    return start


@pytest.fixture
async def live_client(live: LiveClient) -> AsyncIterator[Client]:
    async with live() as client:
        yield client


@pytest.fixture
def service(fake: FakeUpstream) -> Iterator[Service]:
    """The real service (`python -m quartchat`) in front of `fake`, with short pings and timeout."""
    with Service(fake.url, SSE_PING_SECONDS="0.3", REQUEST_TIMEOUT_SECONDS="2") as service:
        yield service


def assert_error(response_status: int, body: str | bytes, status: int, code: str) -> dict[str, Any]:
    """Every error, on every route, has this one shape."""
    assert response_status == status, body
    payload = orjson.loads(body)
    assert set(payload) == {"error"}
    error = payload["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["request_id"], str) and error["request_id"]
    assert SECRET not in _text(body)
    return dict(error)


def error_event(events: list[tuple[str, Any]]) -> dict[str, Any]:
    """The stream's terminal `error` event (asserting that is how it ended)."""
    kind, data = events[-1]
    assert kind == "error", events
    assert set(data) == {"error"}
    error: dict[str, Any] = data["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert not any(k == "done" for k, _ in events)
    return error


def texts(events: list[tuple[str, Any]]) -> str:
    """The text the `chunk` events carried, joined."""
    return "".join(data["delta"] for kind, data in events if kind == "chunk")


def parse_events(body: str | bytes) -> list[tuple[str, Any]]:
    """Our own stream, decoded: (event, data) pairs, comments kept as ("comment", text)."""
    events: list[tuple[str, Any]] = []
    for block in _text(body).split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(("comment", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


CHAT = {"messages": [{"role": "user", "content": "Hello"}]}
