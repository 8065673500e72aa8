"""The upstream refuses our key (401/403): users are told to tell the administrator, nothing of
the upstream's words (they tell the reader to get a key); the operator finds those words, with
credentials redacted, in the log and on the admin page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import URL

from quartchat import create_app

from ..auth.conftest import accounts_settings, log_in, make_user
from ..conftest import CHAT, SECRET, assert_error

OPERATOR_NEUTRAL = (
    "The service's connection to the model provider is misconfigured; tell the administrator."
)
UPSTREAM_WORDS = (
    f"Incorrect API key provided: {SECRET}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)


def refuses(upstream: respx.MockRouter, status: int = 401) -> respx.Route:
    return upstream.post("/chat/completions").respond(
        status, json={"error": {"message": UPSTREAM_WORDS, "code": "invalid_api_key"}}
    )


def auth_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "quartchat" and "refused our credentials" in r.getMessage()
    ]


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
async def test_an_upstream_auth_refusal_tells_the_user_only_to_tell_the_administrator(
    client: Client, upstream: respx.MockRouter, path: str, status: int
) -> None:
    refuses(upstream, status)
    response = await client.post(path, json=CHAT)
    body = await response.get_data()
    error = assert_error(response.status_code, body, 502, "UPSTREAM_AUTH")
    assert error["message"] == OPERATOR_NEUTRAL
    assert b"platform.openai.com" not in body and b"Incorrect API key" not in body


async def test_an_upstream_auth_refusal_is_logged_with_its_words_and_no_credential(
    client: Client, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    refuses(upstream)
    await client.post("/api/chat/stream", json=CHAT)
    [line] = auth_log(caplog)
    assert "(401)" in line
    assert "You can find your API key at https://platform.openai.com" in line
    assert SECRET not in caplog.text
    assert "[redacted]" in line


async def test_a_credential_the_upstream_echoes_is_not_logged(
    client: Client, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    echoed = "the token Bearer tok-without-a-known-prefix-123 was refused"
    upstream.post("/chat/completions").respond(401, json={"error": {"message": echoed}})
    await client.post("/api/chat", json=CHAT)
    [line] = auth_log(caplog)
    assert "tok-without" not in caplog.text
    assert "[redacted] was refused" in line


# -- the admin page --------------------------------------------------------------------------


@pytest.fixture
async def accounts_app(
    database: URL, tmp_path: Path, upstream: respx.MockRouter
) -> AsyncIterator[Quart]:
    app = create_app(
        accounts_settings(database, tmp_path),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app():
        yield app


async def logged_in(app: Quart, email: str, role: str) -> Client:
    await make_user(app, email, role=role)
    client = app.test_client()
    await log_in(client, email)
    return client


async def test_the_admin_sees_the_upstreams_last_auth_refusal_and_when(
    accounts_app: Quart, upstream: respx.MockRouter
) -> None:
    refuses(upstream)
    upstream.get("/models").respond(json={"data": [{"id": "gpt-4o-mini"}]})
    user = await logged_in(accounts_app, "ann@example.com", "user")
    admin = await logged_in(accounts_app, "boss@example.com", "admin")
    before = await (await admin.get("/api/admin/upstream")).get_json()
    assert before["last_auth_failure"] is None
    await user.post("/api/chat/stream", json=CHAT)
    response = await admin.get("/api/admin/upstream")
    assert response.status_code == 200
    failure = (await response.get_json())["last_auth_failure"]
    assert failure["status"] == 401
    assert "You can find your API key at https://platform.openai.com" in failure["message"]
    assert SECRET not in failure["message"] and "[redacted]" in failure["message"]
    at = datetime.fromisoformat(failure["at"])
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=5)


async def test_only_admins_see_the_upstream_status(accounts_app: Quart) -> None:
    user = await logged_in(accounts_app, "ann@example.com", "user")
    response = await user.get("/api/admin/upstream")
    assert_error(response.status_code, await response.get_data(), 403, "FORBIDDEN")
    anonymous = await accounts_app.test_client().get("/api/admin/upstream")
    assert anonymous.status_code == 401
