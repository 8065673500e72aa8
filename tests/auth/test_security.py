"""The attacks the peers' advisories taught: each test can fail for the reason in its name."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from quartchat.auth import passwords as passwords_module
from quartchat.auth import tokens as tokens_module
from quartchat.db import Database
from quartchat.db.tables import users

from ..conftest import CHAT, assert_error
from ..postgres import postgres_bin
from ..test_api import COMPLETION
from .conftest import PASSWORD, accounts, issue_setup_token, log_in, make_user, session_cookie


async def test_thirty_concurrent_setups_make_exactly_one_admin(app: Quart) -> None:
    secret = await issue_setup_token(app)

    async def attempt(i: int) -> int:
        response = await app.test_client().post(
            "/api/auth/setup",
            json={"token": secret, "email": f"admin{i}@example.com", "password": PASSWORD},
            scope_base={"client": (f"198.51.100.{i}", 40000)},  # under the per-address limit
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt(i) for i in range(30)))
    assert sorted(statuses) == [201] + [403] * 29
    db: Database = app.extensions["db"]
    async with db.read() as connection:
        count = await connection.scalar(select(func.count()).select_from(users))
        admins = await connection.scalar(
            select(func.count()).select_from(users).where(users.c.role == "admin")
        )
    assert (count, admins) == (1, 1)


async def test_the_setup_token_works_only_while_there_is_no_admin(app: Quart) -> None:
    secret = await issue_setup_token(app)
    await make_user(app, "someone@example.com", role="admin")
    response = await app.test_client().post(
        "/api/auth/setup", json={"token": secret, "email": "x@example.com", "password": PASSWORD}
    )
    assert_error(response.status_code, await response.get_data(), 403, "SETUP_REFUSED")


async def test_a_login_replaces_any_session_cookie_the_browser_had(
    app: Quart, client: Client
) -> None:
    """Session fixation: a cookie planted before the login is not the session after it."""
    await make_user(app, "ann@example.com")
    await make_user(app, "eve@example.com")
    attacker = app.test_client()
    await log_in(attacker, "eve@example.com")
    planted = session_cookie(attacker)
    client.set_cookie("localhost", "quartchat_session", planted or "")
    await log_in(client, "ann@example.com")
    assert session_cookie(client) != planted
    me = orjson.loads(await (await client.get("/api/auth/me")).get_data())
    assert me["email"] == "ann@example.com"
    # and the attacker's own cookie is still only the attacker
    them = orjson.loads(await (await attacker.get("/api/auth/me")).get_data())
    assert them["email"] == "eve@example.com"


async def two_browsers(app: Quart, email: str) -> tuple[Client, Client]:
    first, second = app.test_client(), app.test_client()
    await log_in(first, email)
    await log_in(second, email)
    return first, second


async def test_a_password_change_ends_every_other_session_at_the_next_request(
    app: Quart,
) -> None:
    await make_user(app, "ann@example.com")
    laptop, phone = await two_browsers(app, "ann@example.com")
    assert (await phone.get("/api/auth/me")).status_code == 200  # cached now
    response = await laptop.post(
        "/api/auth/password", json={"current": PASSWORD, "new": "a brand new password"}
    )
    assert response.status_code == 200
    gone = await phone.get("/api/auth/me")
    assert_error(gone.status_code, await gone.get_data(), 401, "UNAUTHENTICATED")
    assert (await laptop.get("/api/auth/me")).status_code == 200  # given a new session


async def test_disabling_a_user_ends_their_sessions_and_tokens_at_the_next_request(
    app: Quart,
) -> None:
    await make_user(app, "boss@example.com", role="admin")
    user = await make_user(app, "ann@example.com")
    admin, ann = app.test_client(), app.test_client()
    await log_in(admin, "boss@example.com")
    await log_in(ann, "ann@example.com")
    token = orjson.loads(
        await (await ann.post("/api/auth/tokens", json={"name": "script"})).get_data()
    )["token"]
    script = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await script.get("/api/auth/me", headers=bearer)).status_code == 200
    assert (await ann.get("/api/auth/me")).status_code == 200
    response = await admin.patch(f"/api/admin/users/{user.id}", json={"status": "disabled"})
    assert response.status_code == 200
    for client, headers in ((ann, {}), (script, bearer)):
        refused = await client.get("/api/auth/me", headers=headers)
        assert_error(refused.status_code, await refused.get_data(), 401, "UNAUTHENTICATED")
    again = await app.test_client().post(
        "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert_error(again.status_code, await again.get_data(), 403, "ACCOUNT_DISABLED")


async def test_a_token_revoked_during_a_request_cannot_start_another(
    app: Quart, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    await make_user(app, "ann@example.com")
    browser = app.test_client()
    await log_in(browser, "ann@example.com")
    made = orjson.loads(
        await (await browser.post("/api/auth/tokens", json={"name": "script"})).get_data()
    )
    bearer = {"Authorization": f"Bearer {made['token']}"}
    script = app.test_client()
    assert (await script.post("/api/chat", json=CHAT, headers=bearer)).status_code == 200
    assert (await browser.delete(f"/api/auth/tokens/{made['id']}")).status_code == 200
    refused = await script.post("/api/chat", json=CHAT, headers=bearer)
    assert_error(refused.status_code, await refused.get_data(), 401, "UNAUTHENTICATED")


async def a_script_token(app: Quart) -> str:
    """An API token of a new user, made through the API."""
    await make_user(app, "ann@example.com")
    browser = app.test_client()
    await log_in(browser, "ann@example.com")
    made = await browser.post("/api/auth/tokens", json={"name": "script"})
    token: str = orjson.loads(await made.get_data())["token"]
    return token


def count_token_lookups(monkeypatch: pytest.MonkeyPatch, *, taking: float = 0.0) -> list[str]:
    """The secrets looked up in the database from now on (each lookup taking `taking` s more)."""
    lookups: list[str] = []
    real_owner = tokens_module.owner

    async def counted_owner(connection: Any, secret: str) -> Any:
        lookups.append(secret)
        await asyncio.sleep(taking)
        return await real_owner(connection, secret)

    monkeypatch.setattr(tokens_module, "owner", counted_owner)
    return lookups


async def test_requests_that_miss_the_cache_together_share_one_lookup(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script's keep-alive connections all miss when its cached token expires; one lookup
    answers them all (and a token that is not valid is refused to each of them)."""
    token = await a_script_token(app)
    lookups = count_token_lookups(monkeypatch, taking=0.05)  # a slow lookup, as under load
    for secret, status in ((token, 200), ("qc_" + "x" * 40, 401)):
        headers = {"Authorization": f"Bearer {secret}"}
        clients = [app.test_client() for _ in range(20)]
        answers = await asyncio.gather(*(c.get("/api/auth/me", headers=headers) for c in clients))
        assert len({a.status_code for a in answers}) == 1
        assert lookups.count(secret) == 1
        assert [a.status_code for a in answers] == [status] * 20


async def test_a_token_is_looked_up_once_while_it_is_cached(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await a_script_token(app)
    lookups = count_token_lookups(monkeypatch)
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(3):  # one after the other, well within CACHE_SECONDS
        assert (await app.test_client().get("/api/auth/me", headers=headers)).status_code == 200
    assert lookups == [token]


async def test_an_unknown_or_malformed_token_is_refused(client: Client) -> None:
    for value in ("Bearer qc_not-a-real-token", "Bearer sk-something-else", "Bearer "):
        response = await client.get("/api/auth/me", headers={"Authorization": value})
        assert_error(response.status_code, await response.get_data(), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize(
    "attack",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
    ],
    ids=["text/plain", "form", "cross-site fetch", "foreign origin"],
)
async def test_a_cross_site_request_riding_the_cookie_is_refused(
    app: Quart, client: Client, upstream: respx.MockRouter, attack: dict[str, str]
) -> None:
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    await make_user(app, "ann@example.com")
    await log_in(client, "ann@example.com")
    headers = {"Content-Type": "application/json", **attack}
    response = await client.post("/api/chat", data=orjson.dumps(CHAT), headers=headers)
    assert response.status_code in (403, 415)
    assert not route.called
    tokens = await client.post("/api/auth/tokens", data=b'{"name": "x"}', headers=headers)
    assert tokens.status_code in (403, 415)


async def test_a_script_with_a_token_and_no_cookie_or_origin_works(
    app: Quart, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    await make_user(app, "ann@example.com")
    browser = app.test_client()
    await log_in(browser, "ann@example.com")
    token = orjson.loads(
        await (await browser.post("/api/auth/tokens", json={"name": "cli"})).get_data()
    )["token"]
    script = app.test_client()
    script.cookie_jar = None
    response = await script.post(
        "/api/chat", json=CHAT, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200


async def login_status(app: Quart, email: str, password: str, address: str) -> tuple[int, Any]:
    response = await app.test_client().post(
        "/api/auth/login",
        json={"email": email, "password": password},
        scope_base={"client": (address, 40000)},
    )
    return response.status_code, response


async def test_the_eleventh_wrong_password_for_an_account_is_429_from_any_address(
    app: Quart,
) -> None:
    await make_user(app, "ann@example.com")
    await make_user(app, "bob@example.com")
    for i in range(10):
        status, _ = await login_status(app, "ann@example.com", "wrong", f"198.51.100.{i}")
        assert status == 401
    status, response = await login_status(app, "ann@example.com", PASSWORD, "198.51.100.77")
    error = assert_error(status, await response.get_data(), 429, "TOO_MANY_ATTEMPTS")
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "seconds" in error["message"]
    status, _ = await login_status(app, "bob@example.com", PASSWORD, "198.51.100.78")
    assert status == 200  # another account is not locked


async def test_the_eleventh_wrong_password_from_an_address_is_429_for_any_account(
    app: Quart,
) -> None:
    await make_user(app, "bob@example.com")
    for i in range(10):
        status, _ = await login_status(app, f"guess{i}@example.com", "wrong", "203.0.113.9")
        assert status == 401
    status, response = await login_status(app, "bob@example.com", PASSWORD, "203.0.113.9")
    assert_error(status, await response.get_data(), 429, "TOO_MANY_ATTEMPTS")
    status, _ = await login_status(app, "bob@example.com", PASSWORD, "203.0.113.10")
    assert status == 200  # the account itself is fine from elsewhere


class CountingHasher:
    """argon2's hasher, counting the verifications it really does."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, stored: str, password: str) -> bool:
        self.verified.append(stored)
        return bool(self.real.verify(stored, password))


async def test_an_unknown_email_costs_a_full_password_check_too(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher(passwords_module.HASHER)
    monkeypatch.setattr(passwords_module, "HASHER", hasher)
    user = await make_user(app, "ann@example.com")
    await login_status(app, "nobody@example.com", PASSWORD, "192.0.2.1")
    await login_status(app, "ann@example.com", "wrong", "192.0.2.2")
    assert len(hasher.verified) == 2
    assert hasher.verified[0].startswith("$argon2id$")  # the stand-in hash, as costly
    assert hasher.verified[1] == user.password_hash


class PriorityHasher(CountingHasher):
    """argon2's hasher, noting the scheduling priority of the thread each hash runs on."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.priorities: list[int] = []

    def _note(self) -> None:
        self.priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def hash(self, password: str) -> str:
        self._note()
        return str(self.real.hash(password))

    def verify(self, stored: str, password: str) -> bool:
        self._note()
        return super().verify(stored, password)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_passwords_are_hashed_at_the_lowest_priority_leaving_the_loop_its_own(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    hasher = PriorityHasher(passwords_module.HASHER)
    monkeypatch.setattr(passwords_module, "HASHER", hasher)
    await accounts(app).passwords.hash(PASSWORD)
    await make_user(app, "ann@example.com")
    await login_status(app, "ann@example.com", PASSWORD, "192.0.2.1")  # a verify
    assert hasher.priorities == [passwords_module.HASH_NICE] * 2
    assert passwords_module.HASH_NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_priority


def everything_stored(database: URL) -> bytes:
    """The database's bytes: the SQLite file and its WAL, or a pg_dump."""
    if database.get_backend_name() == "sqlite":
        path = Path(database.database or "")
        return b"".join(f.read_bytes() for f in [path, *path.parent.glob("quartchat.db-*")])
    bin_dir = postgres_bin()
    assert bin_dir is not None
    host, port, user = database.host or "", str(database.port), database.username or ""
    dump = [str(bin_dir / "pg_dump"), "-h", host, "-p", port, "-U", user, database.database or ""]
    return subprocess.run(dump, capture_output=True, check=True).stdout


async def test_no_token_or_password_is_stored_in_the_clear(
    app: Quart, database: URL, tmp_path: Path
) -> None:
    password = "a very findable password 1234"
    await make_user(app, "ann@example.com", password=password)
    browser = app.test_client()
    await log_in(browser, "ann@example.com", password)
    token = orjson.loads(
        await (await browser.post("/api/auth/tokens", json={"name": "cli"})).get_data()
    )["token"]
    cookie = session_cookie(browser)
    await app.extensions["db"].close()  # flush everything to the file
    stored = await asyncio.to_thread(everything_stored, database)
    assert b"ann@example.com" in stored  # the search can find things
    for secret in (password, token, token.removeprefix("qc_"), cookie or "nothing"):
        assert secret.encode() not in stored
