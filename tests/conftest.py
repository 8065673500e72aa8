from __future__ import annotations

import asyncio
import os
import shutil
import uuid
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
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from quartchat import create_app
from quartchat.config import Settings
from quartchat.db import database_url
from quartchat.db.migrate import migrate

from .fake_upstream import FakeUpstream
from .postgres import server_url
from .redis_server import RedisServer, redis_server_bin
from .service import Service

UPSTREAM = "https://upstream.test/v1"
SECRET = "sk-test-9f8e7d6c5b4a3210SECRET"
REDIS_PASSWORD = "redis-test-PASSWORD-5e4d3c"  # in REDIS_URL; must never reach a log or a response
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sse"  # copies of ../shared/fixtures/sse


# -- databases: every test that touches data runs on SQLite and on a real PostgreSQL ------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[URL | None]:
    """A PostgreSQL server for the session (tests/postgres.py), or None: those tests skip, or
    under CI=1 fail, since CI installs PostgreSQL."""
    url, cluster, why = server_url()
    if url is None and os.environ.get("CI"):
        pytest.fail(f"CI needs PostgreSQL: {why}")
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "quartchat.db"
    asyncio.run(migrate(database_url(None, path.parent)))
    return path


def sqlite_copy(template: Path, tmp_path: Path) -> URL:
    """The URL of a copy of the migrated SQLite `template`, in `tmp_path`/data."""
    copy = tmp_path / "data" / "quartchat.db"
    copy.parent.mkdir()
    shutil.copy(template, copy)
    return database_url(None, copy.parent)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: URL | None) -> URL | None:
    """A PostgreSQL database migrated once; each test gets a copy (CREATE DATABASE … TEMPLATE)."""
    if postgres_server is None:
        return None
    template = postgres_server.set(database=f"quartchat_template_{os.getpid()}")
    asyncio.run(_create_database(postgres_server, template.database or ""))
    asyncio.run(migrate(template))
    return template


async def _create_database(server: URL, name: str, template: str | None = None) -> None:
    engine = create_async_engine(
        server, isolation_level="AUTOCOMMIT"
    )  # no CREATE DATABASE in a transaction
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            suffix = f' TEMPLATE "{template}"' if template else ""
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_server: URL | None,
    postgres_template: URL | None,
) -> AsyncIterator[URL]:
    """The URL of a migrated, empty database of each kind, made for this test."""
    if request.param == "sqlite":
        yield sqlite_copy(sqlite_template, tmp_path)
        return
    if postgres_server is None or postgres_template is None:
        pytest.skip("no PostgreSQL here (apt-get install postgresql, or set TEST_DATABASE_URL)")
    name = f"test_{uuid.uuid4().hex[:16]}"
    await _create_database(postgres_server, name, postgres_template.database)
    yield postgres_server.set(database=name)


# -- Redis: what processes share when REDIS_URL is set ---------------------------------------------


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own (tests/redis_server.py), with a password (REDIS_PASSWORD),
    which the test may `stop()` and `start()` again. Without Debian's redis-server the test skips, or under CI=1 fails."""
    binary = redis_server_bin()
    if binary is None:
        why = "no redis-server here (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Redis: {why}")
        pytest.skip(why)
    server = RedisServer(binary, password=REDIS_PASSWORD)
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis (`redis_server`'s)."""
    return redis_server.url


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask most hosts give a process, whatever this one's is; restored afterwards."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": SECRET,
        "openai_api_base": UPSTREAM,
        "sse_ping_seconds": 15,
        "auth_mode": "none",  # the relay's tests; tests/auth/ turn accounts on
        # Tests name any model they like; tests/usage/ test the allow-list (MODELS_ALLOWED="").
        "models_allowed": ["*"],
        # Set, so no request waits on the upstream's /models for its default;
        # `openai_model=None` leaves it unset (the default is then one the upstream lists).
        "openai_model": "gpt-4o-mini",
    }
    values.update(overrides)
    if values["openai_model"] is None:
        del values["openai_model"]
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


SERVERS = ("hypercorn", "uvicorn")  # every server quartchat supports (SERVER)


@pytest.fixture
def server() -> str:
    """The server `service` runs on: the default one. A module whose tests must hold on every
    server overrides this with a fixture parametrised over `SERVERS`."""
    return "hypercorn"


@pytest.fixture
def service(fake: FakeUpstream, server: str) -> Iterator[Service]:
    """The real service (`python -m quartchat`) in front of `fake`, with short pings and timeout."""
    with Service(
        fake.url, SERVER=server, SSE_PING_SECONDS="0.3", REQUEST_TIMEOUT_SECONDS="2"
    ) as service:
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
