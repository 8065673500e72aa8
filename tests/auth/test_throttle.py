"""Guessing is counted before it costs anything (issue 16, items 3 and 7): a login, a setup and an
invite acceptance each count the attempt atomically before the password is hashed or verified,
and the owner of an account is never locked out of a browser they logged in from before."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat.auth import passwords as passwords_module

from ..conftest import assert_error
from .conftest import PASSWORD, issue_setup_token, log_in, make_user

LIMIT = 10  # LOGIN_ATTEMPTS_PER_MINUTE's default


class CountingHasher:
    """argon2's hasher, counting the hashes and verifications it really does."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.hashed = 0
        self.verified: list[str] = []

    def hash(self, password: str) -> str:
        self.hashed += 1
        return str(self.real.hash(password))

    def verify(self, stored: str, password: str) -> bool:
        self.verified.append(stored)
        return bool(self.real.verify(stored, password))


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher(passwords_module.HASHER)
    monkeypatch.setattr(passwords_module, "HASHER", counting)
    return counting


def address(i: int) -> dict[str, Any]:
    """A test request from its own client address."""
    return {"scope_base": {"client": (f"198.51.{i // 250}.{i % 250 + 1}", 40000)}}


async def login(client: Client, email: str, password: str, i: int) -> int:
    response = await client.post(
        "/api/auth/login", json={"email": email, "password": password}, **address(i)
    )
    return response.status_code


async def guess_at_once(app: Quart, email: str, n: int, first: int = 100) -> list[int]:
    """`n` wrong passwords for `email` at the same moment, each from another address."""
    return await asyncio.gather(
        *(login(app.test_client(), email, "wrong guess", first + i) for i in range(n))
    )


# -- logins ---------------------------------------------------------------------------------------


async def test_concurrent_wrong_passwords_reach_the_verifier_at_most_limit_times(
    app: Quart, hasher: CountingHasher
) -> None:
    user = await make_user(app, "ann@example.com")
    statuses = await guess_at_once(app, "ann@example.com", 3 * LIMIT)
    assert hasher.verified.count(user.password_hash or "") == LIMIT
    assert sorted(statuses) == [401] * LIMIT + [429] * (2 * LIMIT)


async def test_the_owner_logs_in_from_a_known_browser_while_the_account_is_under_attack(
    app: Quart,
) -> None:
    await make_user(app, "ann@example.com")
    laptop = app.test_client()
    await log_in(laptop, "ann@example.com")  # the laptop is known from now on
    assert sorted(await guess_at_once(app, "ann@example.com", 2 * LIMIT)).count(429) == LIMIT
    stranger = await login(app.test_client(), "ann@example.com", PASSWORD, 7)
    assert stranger == 429  # the account is locked for everyone else...
    assert await login(laptop, "ann@example.com", PASSWORD, 8) == 200  # ...not for its owner
    me = orjson.loads(await (await laptop.get("/api/auth/me")).get_data())
    assert me["email"] == "ann@example.com"


async def test_a_browser_known_to_another_account_or_a_forged_cookie_gets_no_exemption(
    app: Quart,
) -> None:
    await make_user(app, "ann@example.com")
    await make_user(app, "eve@example.com")
    eve = app.test_client()
    await log_in(eve, "eve@example.com")  # Eve's browser is known, to Eve's account
    await guess_at_once(app, "ann@example.com", 2 * LIMIT)
    assert await login(eve, "ann@example.com", PASSWORD, 7) == 429
    forged = app.test_client()
    forged.set_cookie("localhost", "quartchat_device", '{"u": 1, "d": "x"}')
    assert await login(forged, "ann@example.com", PASSWORD, 8) == 429


async def test_a_known_browser_has_a_limit_of_its_own(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    laptop = app.test_client()
    await log_in(laptop, "ann@example.com")
    statuses = [await login(laptop, "ann@example.com", "wrong", i) for i in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [429]


async def test_successful_logins_from_one_address_do_not_use_up_its_attempts(
    app: Quart,
) -> None:
    """Attempts are counted before the check; a right password gives its attempt back, so an
    office behind one address can log in all morning."""
    await make_user(app, "ann@example.com")
    statuses = [
        await login(app.test_client(), "ann@example.com", PASSWORD, 0) for _ in range(LIMIT + 2)
    ]
    assert statuses == [200] * (LIMIT + 2)


# -- setup and invites: the token first, then the hash; counted per address ------------------------


async def set_up(app: Quart, token: str, i: int = 0) -> Any:
    return await app.test_client().post(
        "/api/auth/setup",
        json={"token": token, "email": "boss@example.com", "password": PASSWORD},
        **address(i),
    )


async def accept(app: Quart, token: str, i: int = 0) -> Any:
    return await app.test_client().post(
        "/api/auth/invite/accept",
        json={"token": token, "email": "guest@example.com", "password": PASSWORD},
        **address(i),
    )


async def an_invite(app: Quart) -> str:
    await make_user(app, "boss@example.com", role="admin")
    admin = app.test_client()
    await log_in(admin, "boss@example.com")
    made = await admin.post("/api/invites", json={})
    token: str = orjson.loads(await made.get_data())["token"]
    return token


async def test_a_bogus_setup_token_never_reaches_the_hasher(
    app: Quart, hasher: CountingHasher
) -> None:
    await issue_setup_token(app)
    response = await set_up(app, "not-the-setup-token")
    assert_error(response.status_code, await response.get_data(), 403, "SETUP_REFUSED")
    assert hasher.hashed == 0


async def test_a_bogus_invite_token_never_reaches_the_hasher(
    app: Quart, hasher: CountingHasher
) -> None:
    response = await accept(app, "not-an-invite-token")
    assert_error(response.status_code, await response.get_data(), 404, "INVALID_INVITE")
    assert hasher.hashed == 0


async def test_the_eleventh_setup_attempt_from_one_address_is_429(app: Quart) -> None:
    secret = await issue_setup_token(app)
    for _ in range(LIMIT):
        refused = await set_up(app, "not-the-setup-token")
        assert refused.status_code == 403
    response = await set_up(app, secret)  # the right token, too late from this address
    assert_error(response.status_code, await response.get_data(), 429, "TOO_MANY_ATTEMPTS")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert (await set_up(app, secret, 1)).status_code == 201  # another address is not limited


async def test_the_eleventh_invite_acceptance_from_one_address_is_429(app: Quart) -> None:
    token = await an_invite(app)
    for _ in range(LIMIT):
        refused = await accept(app, "not-an-invite-token")
        assert refused.status_code == 404
    response = await accept(app, token)
    assert_error(response.status_code, await response.get_data(), 429, "TOO_MANY_ATTEMPTS")
    assert "Retry-After" in response.headers
    assert (await accept(app, token, 1)).status_code == 201
