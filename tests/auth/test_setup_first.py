"""Setup stays possible until an admin exists, and nobody signs up before (issue 16, item 11):
with SIGNUP_POLICY=open, a stranger who signed up before the operator claimed setup used to end
setup for ever."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from quart import Quart

from quartchat.auth import setup
from quartchat.auth.accounts import Accounts
from quartchat.auth.passwords import Passwords
from quartchat.auth.principal import PrincipalCache
from quartchat.db import Database

from ..conftest import assert_error
from .conftest import PASSWORD, accounts, make_user


@pytest.fixture(params=["open", "approval"])
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"signup_policy": request.param}


async def issue(app: Quart) -> str | None:
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        return await setup.issue(connection)


async def sign_up(app: Quart, email: str) -> Any:
    return await app.test_client().post(
        "/api/auth/signup", json={"email": email, "password": PASSWORD}
    )


async def set_up(app: Quart, token: str) -> Any:
    return await app.test_client().post(
        "/api/auth/setup", json={"token": token, "email": "boss@example.com", "password": PASSWORD}
    )


async def setup_required(app: Quart) -> bool:
    state = orjson.loads(await (await app.test_client().get("/api/auth/state")).get_data())
    return bool(state["setup_required"])


async def test_a_stranger_cannot_sign_up_before_setup_and_setup_then_works(app: Quart) -> None:
    token = await issue(app)
    assert token is not None
    early = await sign_up(app, "stranger@example.com")
    assert_error(early.status_code, await early.get_data(), 403, "SETUP_PENDING")
    assert await setup_required(app)
    assert (await set_up(app, token)).status_code == 201
    assert not await setup_required(app)
    assert (await sign_up(app, "stranger@example.com")).status_code in (201, 202)


async def test_setup_works_while_no_admin_exists_even_if_other_users_do(app: Quart) -> None:
    """A database that has users but no admin (signed up under older rules, or through an
    identity proxy) still gets a setup link, and the link still makes the admin."""
    await make_user(app, "stranger@example.com")
    assert await setup_required(app)
    token = await issue(app)
    assert token is not None
    response = await set_up(app, token)
    assert response.status_code == 201
    assert await issue(app) is None  # and once the admin exists, no more links


async def test_setup_cannot_take_over_an_existing_account(app: Quart) -> None:
    await make_user(app, "boss@example.com")
    token = await issue(app)
    assert token is not None
    response = await set_up(app, token)
    assert_error(response.status_code, await response.get_data(), 409, "EMAIL_TAKEN")
    assert await setup_required(app)  # the link still works, with another email


async def test_admin_email_makes_the_admin_though_other_users_exist(app: Quart) -> None:
    await make_user(app, "stranger@example.com")
    service = accounts(app)
    settings = service.settings.model_copy(
        update={"admin_email": "boss@example.com", "admin_password": SecretStr(PASSWORD)}
    )
    from_settings = Accounts(settings, service.db, Passwords(), PrincipalCache())
    assert await from_settings.first_admin_from_settings()
    assert not await setup_required(app)
