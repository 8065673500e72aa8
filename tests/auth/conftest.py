"""Accounts on, on both databases: an app in-process, and ways to make users and log in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import URL

from quartchat import create_app
from quartchat.auth import setup, users
from quartchat.auth.accounts import Accounts
from quartchat.auth.passwords import HASHER
from quartchat.db import Database

from ..conftest import make_settings

PASSWORD = "correct horse battery staple"


def accounts_settings(database: URL, data_dir: Path, **overrides: Any) -> Any:
    return make_settings(
        auth_mode="accounts",
        database_url=database.render_as_string(hide_password=False),
        data_dir=data_dir,
        secret_key="test-secret-key-not-for-production",
        **overrides,
    )


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra settings for the app; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
async def app(
    database: URL,
    tmp_path: Path,
    upstream: respx.MockRouter,
    settings_overrides: dict[str, Any],
) -> AsyncIterator[Quart]:
    upstream._assert_all_called = False
    settings = accounts_settings(database, tmp_path, **settings_overrides)
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


async def make_user(
    app: Quart, email: str, *, role: str = "user", status: str = "active", password: str = PASSWORD
) -> users.User:
    """A user straight in the database (a cheap hash: tests make many)."""
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        return await users.create(
            connection, email, HASHER.hash(password), role=role, status=status
        )


async def issue_setup_token(app: Quart) -> str:
    """A setup link's token, as the service prints it at start while no admin exists."""
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        secret = await setup.issue(connection)
    assert secret is not None
    return secret


def accounts(app: Quart) -> Accounts:
    service: Accounts = app.extensions["accounts"]
    return service


async def log_in(client: Client, email: str, password: str = PASSWORD, **headers: str) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )
    assert response.status_code == 200, await response.get_data()


def session_cookie(client: Client) -> str | None:
    jar = client.cookie_jar
    assert jar is not None
    for cookie in jar:
        if cookie.name == "quartchat_session":
            return cookie.value
    return None


def set_cookie(response: Any, name: str = "quartchat_session") -> str:
    """The response's Set-Cookie header for the cookie `name` (a login sets two)."""
    headers: list[str] = response.headers.getlist("Set-Cookie")
    return next(h for h in headers if h.startswith(name + "="))
