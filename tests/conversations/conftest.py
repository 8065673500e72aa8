"""Conversations on the server: an app with accounts, on both databases, in front of the fake
upstream over a real socket; two users, each with a logged-in client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import URL

from quartchat import create_app

from ..auth.conftest import accounts_settings, log_in, make_user
from ..conftest import parse_events
from ..fake_upstream import FakeUpstream


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra settings for the app; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def app(
    database: URL, tmp_path: Path, fake: FakeUpstream, settings_overrides: dict[str, Any]
) -> AsyncIterator[Quart]:
    settings = accounts_settings(database, tmp_path, openai_api_base=fake.url, **settings_overrides)
    app = create_app(settings)
    async with app.test_app():
        yield app


@pytest.fixture
async def ann(app: Quart) -> Client:
    await make_user(app, "ann@example.com")
    client = app.test_client()
    await log_in(client, "ann@example.com")
    return client


@pytest.fixture
async def eve(app: Quart) -> Client:
    await make_user(app, "eve@example.com")
    client = app.test_client()
    await log_in(client, "eve@example.com")
    return client


async def body(response: Any) -> Any:
    return orjson.loads(await response.get_data())


async def new_conversation(client: Client, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/conversations", json=fields)
    assert response.status_code == 201, await response.get_data()
    made: dict[str, Any] = await body(response)
    return made


async def say(
    client: Client, conversation_id: str, content: str, client_id: str, **extra: Any
) -> tuple[Any, list[tuple[str, Any]]]:
    """Send a message; the response and its events."""
    response = await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"content": content, "client_id": client_id, **extra},
    )
    return response, parse_events(await response.get_data())


async def conversation(client: Client, conversation_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, await response.get_data()
    found: dict[str, Any] = await body(response)
    return found
