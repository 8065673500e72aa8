"""Logging in and out, and what needs a login."""

from __future__ import annotations

import orjson
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client

from ..conftest import CHAT, assert_error
from ..test_api import COMPLETION
from .conftest import PASSWORD, log_in, make_user, session_cookie, set_cookie


async def test_the_api_needs_a_login(client: Client) -> None:
    for path in ("/api/models", "/api/auth/me"):
        response = await client.get(path)
        assert_error(response.status_code, await response.get_data(), 401, "UNAUTHENTICATED")
    response = await client.post("/api/chat", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 401, "UNAUTHENTICATED")


async def test_a_page_redirects_to_the_login_page(client: Client) -> None:
    response = await client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/"


async def test_health_and_the_api_description_stay_open(client: Client) -> None:
    for path in ("/health", "/openapi.json", "/docs", "/api/auth/state"):
        assert (await client.get(path)).status_code == 200, path


async def test_a_login_opens_the_api_to_that_user(
    app: Quart, client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    user = await make_user(app, "Ann@Example.com")
    await log_in(client, "ann@example.com")
    me = orjson.loads(await (await client.get("/api/auth/me")).get_data())
    assert (me["id"], me["email"], me["role"], me["via"]) == (
        user.id,
        "ann@example.com",
        "user",
        "session",
    )
    assert (await client.post("/api/chat", json=CHAT)).status_code == 200


async def test_the_session_cookie_is_http_only_lax_and_not_readable_as_the_session_id(
    app: Quart, client: Client
) -> None:
    await make_user(app, "ann@example.com")
    response = await client.post(
        "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
    )
    header = set_cookie(response)
    assert header.startswith("quartchat_session=")
    assert "HttpOnly" in header and "SameSite=Lax" in header
    assert "Max-Age=2592000" in header  # 30 days


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    app: Quart, client: Client
) -> None:
    await make_user(app, "ann@example.com")
    answers = []
    for email, password in (
        ("ann@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
    ):
        response = await client.post("/api/auth/login", json={"email": email, "password": password})
        error = assert_error(
            response.status_code, await response.get_data(), 401, "INVALID_CREDENTIALS"
        )
        answers.append(error["message"])
    assert answers[0] == answers[1]


async def test_logout_ends_the_session_on_the_server(app: Quart, client: Client) -> None:
    await make_user(app, "ann@example.com")
    await log_in(client, "ann@example.com")
    stolen = session_cookie(client)
    assert (await client.post("/api/auth/logout", json={})).status_code == 200
    thief = app.test_client()
    thief.set_cookie("localhost", "quartchat_session", stolen or "")
    response = await thief.get("/api/auth/me")
    assert_error(response.status_code, await response.get_data(), 401, "UNAUTHENTICATED")
