"""Limits: an app with accounts, on both databases, in front of the fake upstream over a real
socket; two users, each logged in; and streams a test can hold open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.typing import TestHTTPConnectionProtocol as TestHTTPConnection
from sqlalchemy.engine import URL

from quartchat import create_app

from ..auth.conftest import accounts_settings, log_in, make_user
from ..conftest import CHAT
from ..fake_upstream import FakeUpstream, Reply, completion_chunks

DEADLINE = 10.0
"""The longest any test here waits for what it expects: generous, so a loaded machine passes."""


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings for the app; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def app(
    database: URL, tmp_path: Path, fake: FakeUpstream, settings_overrides: dict[str, Any]
) -> AsyncIterator[Quart]:
    settings = accounts_settings(database, tmp_path, openai_api_base=fake.url, **settings_overrides)
    app = create_app(settings)
    async with app.test_app():
        yield app


async def user(app: Quart, email: str, role: str = "user") -> tuple[Client, int]:
    made = await make_user(app, email, role=role)
    client = app.test_client()
    await log_in(client, email)
    return client, made.id


@pytest.fixture
async def ann(app: Quart) -> tuple[Client, int]:
    return await user(app, "ann@example.com")


@pytest.fixture
async def eve(app: Quart) -> tuple[Client, int]:
    return await user(app, "eve@example.com")


def hanging() -> Reply:
    """An upstream reply that says "first" and then nothing more, keeping its stream open."""
    return Reply(chunks=completion_chunks(["first"])[:2], hang=True)


async def read_until(connection: TestHTTPConnection, text: bytes, so_far: bytes = b"") -> bytes:
    """What the connection received until `text` arrived (failing after DEADLINE)."""
    received = so_far
    async with asyncio.timeout(DEADLINE):
        while text not in received:
            received += await connection.receive()
    return received


@asynccontextmanager
async def streaming(
    client: Client,
    path: str = "/api/chat/stream",
    body: Any = CHAT,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[TestHTTPConnection]:
    """A stream held open: yielded once its first text ("first") arrived; the client hangs up
    when the block ends."""
    async with client.request(
        path, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    ) as connection:
        await connection.send(orjson.dumps(body))
        await connection.send_complete()
        await read_until(connection, b"first")
        yield connection
        await connection.disconnect()


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition()` to hold, polling, failing after DEADLINE."""
    try:
        async with asyncio.timeout(DEADLINE):
            while True:  # the slots have no event to wait on: polled
                if condition():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"never: {what}")
