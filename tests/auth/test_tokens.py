"""API tokens end when they should: they expire, they are made only with the password (or just
after logging in) and only from a browser, and the routes that end sessions revoke them too; an
admin sees and revokes any user's tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quartchat.db import Database
from quartchat.db.tables import api_tokens, now, sessions

from ..conftest import assert_error
from .conftest import PASSWORD, accounts, log_in, make_user


def instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


async def body(response: Any) -> Any:
    return orjson.loads(await response.get_data())


async def logged_in(app: Quart, email: str, **user: Any) -> tuple[Client, int]:
    """A browser logged in as a new user, and the user's id."""
    made = await make_user(app, email, **user)
    browser = app.test_client()
    await log_in(browser, email)
    return browser, made.id


async def make_token(browser: Client, **fields: Any) -> dict[str, Any]:
    response = await browser.post("/api/auth/tokens", json={"name": "script", **fields})
    assert response.status_code == 201, await response.get_data()
    made: dict[str, Any] = await body(response)
    return made


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


async def status_with(app: Quart, token: dict[str, Any]) -> int:
    """What a script with the token gets from `/api/auth/me`, past any cached answer."""
    accounts(app).cache._entries.clear()
    response = await app.test_client().get("/api/auth/me", headers=bearer(token))
    return response.status_code


async def age_sessions(app: Quart, user_id: int, age: timedelta) -> None:
    """Make the user's sessions look as if they began `age` ago."""
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        await connection.execute(
            update(sessions).where(sessions.c.user_id == user_id).values(created_at=now() - age)
        )


# -- expiry ---------------------------------------------------------------------------------------


async def test_a_token_lasts_90_days_unless_its_owner_chooses_otherwise(app: Quart) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    for fields, days in (({}, 90), ({"expires_in_days": 7}, 7), ({"expires_in_days": None}, None)):
        made = await make_token(ann, **fields)
        if days is None:
            assert made["expires_at"] is None
        else:
            lifetime = instant(made["expires_at"]) - instant(made["created_at"])
            assert lifetime == timedelta(days=days)
    listed = await body(await ann.get("/api/auth/tokens"))
    assert [t["expires_at"] is None for t in listed] == [False, False, True]


@pytest.mark.parametrize(
    ("days", "status"),
    [(1, 201), (365, 201), (30.0, 201), (0, 400), (366, 400), (-1, 400), ("30", 400), (1.5, 400)],
)
async def test_an_expiry_is_a_whole_number_of_days_up_to_a_year(
    app: Quart, days: Any, status: int
) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    response = await ann.post("/api/auth/tokens", json={"name": "x", "expires_in_days": days})
    assert response.status_code == status, await response.get_data()
    if status == 400:
        assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
        assert "expires_in_days" in await response.get_data(as_text=True)


async def test_an_expired_token_is_refused_and_says_it_expired(app: Quart) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    made = await make_token(ann, expires_in_days=1)
    assert await status_with(app, made) == 200
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        await connection.execute(
            update(api_tokens)
            .where(api_tokens.c.id == made["id"])
            .values(expires_at=now() - timedelta(seconds=1))
        )
    accounts(app).cache._entries.clear()
    refused = await app.test_client().get("/api/auth/me", headers=bearer(made))
    error = assert_error(refused.status_code, await refused.get_data(), 401, "UNAUTHENTICATED")
    assert "expired" in error["message"]
    # Still listed, so its owner sees why the script stopped.
    assert [t["id"] for t in await body(await ann.get("/api/auth/tokens"))] == [made["id"]]


# -- making one -----------------------------------------------------------------------------------


async def test_a_session_older_than_ten_minutes_needs_the_password_to_make_a_token(
    app: Quart,
) -> None:
    ann, ann_id = await logged_in(app, "ann@example.com")
    await age_sessions(app, ann_id, timedelta(minutes=9))
    await make_token(ann)  # just logged in: no password asked
    await age_sessions(app, ann_id, timedelta(minutes=11))
    refused = await ann.post("/api/auth/tokens", json={"name": "x"})
    assert_error(refused.status_code, await refused.get_data(), 403, "PASSWORD_REQUIRED")
    wrong = await ann.post("/api/auth/tokens", json={"name": "x", "password": "not it"})
    assert_error(wrong.status_code, await wrong.get_data(), 401, "INVALID_CREDENTIALS")
    await make_token(ann, password=PASSWORD)
    assert len(await body(await ann.get("/api/auth/tokens"))) == 2


async def test_a_wrong_password_is_refused_even_just_after_logging_in(app: Quart) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    wrong = await ann.post("/api/auth/tokens", json={"name": "x", "password": "not it"})
    assert_error(wrong.status_code, await wrong.get_data(), 401, "INVALID_CREDENTIALS")
    assert await body(await ann.get("/api/auth/tokens")) == []


async def test_guessing_the_password_to_make_a_token_meets_the_login_limit(app: Quart) -> None:
    """Ten wrong passwords a minute, then 429 for the right one too, and for logging in."""
    ann, _ = await logged_in(app, "ann@example.com")
    for _ in range(10):
        wrong = await ann.post("/api/auth/tokens", json={"name": "x", "password": "guess"})
        assert wrong.status_code == 401
    right = await ann.post("/api/auth/tokens", json={"name": "x", "password": PASSWORD})
    assert_error(right.status_code, await right.get_data(), 429, "TOO_MANY_ATTEMPTS")
    login = await app.test_client().post(
        "/api/auth/login",
        json={"email": "ann@example.com", "password": PASSWORD},
        scope_base={"client": ("198.51.100.9", 4000)},
    )
    assert_error(login.status_code, await login.get_data(), 429, "TOO_MANY_ATTEMPTS")


async def test_guessing_the_current_password_to_change_it_meets_the_login_limit(
    app: Quart,
) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    change = {"current": "guess", "new": "a brand new password"}
    for _ in range(10):
        assert (await ann.post("/api/auth/password", json=change)).status_code == 401
    right = await ann.post("/api/auth/password", json={**change, "current": PASSWORD})
    assert_error(right.status_code, await right.get_data(), 429, "TOO_MANY_ATTEMPTS")


async def test_a_token_cannot_make_another_token(app: Quart) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    made = await make_token(ann)
    script = app.test_client()
    for fields in ({}, {"password": PASSWORD}):
        refused = await script.post(
            "/api/auth/tokens", json={"name": "more", **fields}, headers=bearer(made)
        )
        assert_error(refused.status_code, await refused.get_data(), 403, "SESSION_REQUIRED")
    assert len(await body(await ann.get("/api/auth/tokens"))) == 1


class TestBehindAnIdentityProxy:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"trusted_proxies": "10.0.0.0/8", "auth_trusted_header": "Remote-Email"}

    async def test_the_trusted_header_cannot_make_a_token(self, app: Quart) -> None:
        """A forged header (a misconfigured proxy) must not walk away with a lasting token."""
        await make_user(app, "ann@example.com")
        for fields in ({}, {"password": PASSWORD}):
            refused = await app.test_client().post(
                "/api/auth/tokens",
                json={"name": "x", **fields},
                headers={"Remote-Email": "ann@example.com"},
                scope_base={"client": ("10.1.2.3", 5000)},
            )
            assert_error(refused.status_code, await refused.get_data(), 403, "SESSION_REQUIRED")


# -- what revokes them ----------------------------------------------------------------------------


async def test_a_password_change_revokes_every_token(app: Quart) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    made = [await make_token(ann), await make_token(ann)]
    assert [await status_with(app, t) for t in made] == [200, 200]
    changed = await ann.post(
        "/api/auth/password", json={"current": PASSWORD, "new": "a brand new password"}
    )
    assert await body(changed) == {"ok": True, "revoked_tokens": 2}
    assert [await status_with(app, t) for t in made] == [401, 401]
    assert await body(await ann.get("/api/auth/tokens")) == []


@pytest.mark.parametrize(("revoke", "revoked", "status"), [(None, 1, 401), (False, 0, 200)])
async def test_an_admin_password_reset_revokes_the_user_s_tokens_unless_told_not_to(
    app: Quart, revoke: bool | None, revoked: int, status: int
) -> None:
    admin, _ = await logged_in(app, "boss@example.com", role="admin")
    ann, ann_id = await logged_in(app, "ann@example.com")
    made = await make_token(ann)
    change: dict[str, Any] = {"password": "reset by admin"}
    if revoke is not None:
        change["revoke_tokens"] = revoke
    reset = await body(await admin.patch(f"/api/admin/users/{ann_id}", json=change))
    assert (reset["email"], reset["revoked_tokens"]) == ("ann@example.com", revoked)
    assert await status_with(app, made) == status
    assert (await ann.get("/api/auth/me")).status_code == 401  # sessions end either way


async def test_a_role_change_revokes_no_token(app: Quart) -> None:
    admin, _ = await logged_in(app, "boss@example.com", role="admin")
    ann, ann_id = await logged_in(app, "ann@example.com")
    made = await make_token(ann)
    changed = await body(await admin.patch(f"/api/admin/users/{ann_id}", json={"role": "admin"}))
    assert changed["revoked_tokens"] == 0
    assert await status_with(app, made) == 200


@pytest.mark.parametrize(("revoke", "revoked", "status"), [(None, 1, 401), (False, 0, 200)])
async def test_log_out_everywhere_revokes_the_tokens_unless_told_not_to(
    app: Quart, revoke: bool | None, revoked: int, status: int
) -> None:
    ann, _ = await logged_in(app, "ann@example.com")
    made = await make_token(ann)
    request = {} if revoke is None else {"revoke_tokens": revoke}
    answer = await ann.post("/api/auth/logout-everywhere", json=request)
    assert await body(answer) == {"ok": True, "revoked_tokens": revoked}
    assert await status_with(app, made) == status
    assert (await ann.get("/api/auth/me")).status_code == 401


# -- an admin's view ------------------------------------------------------------------------------


async def test_an_admin_lists_a_user_s_tokens_and_revokes_one(app: Quart) -> None:
    admin, _ = await logged_in(app, "boss@example.com", role="admin")
    ann, ann_id = await logged_in(app, "ann@example.com")
    kept, revoked = await make_token(ann, name="kept"), await make_token(ann, name="stolen")
    await status_with(app, revoked)  # used once: the admin sees when
    listed = await body(await admin.get(f"/api/admin/users/{ann_id}/tokens"))
    assert [(t["name"], t["last_used_at"] is None) for t in listed] == [
        ("kept", True),
        ("stolen", False),
    ]
    assert all("token" not in t and t["expires_at"] for t in listed)
    gone = await admin.delete(f"/api/admin/users/{ann_id}/tokens/{revoked['id']}")
    assert await body(gone) == {"ok": True}
    assert (await status_with(app, revoked), await status_with(app, kept)) == (401, 200)
    assert [t["name"] for t in await body(await ann.get("/api/auth/tokens"))] == ["kept"]


async def test_only_admins_see_or_revoke_a_user_s_tokens(app: Quart) -> None:
    ann, ann_id = await logged_in(app, "ann@example.com")
    eve, _ = await logged_in(app, "eve@example.com")
    made = await make_token(ann)
    for method, path in (
        ("GET", f"/api/admin/users/{ann_id}/tokens"),
        ("DELETE", f"/api/admin/users/{ann_id}/tokens/{made['id']}"),
    ):
        for who in (eve, ann):  # another user, and the owner: neither is an admin
            response = await who.open(path, method=method, json=None)
            assert_error(response.status_code, await response.get_data(), 403, "FORBIDDEN")
    assert await status_with(app, made) == 200


async def test_a_token_under_another_user_s_id_is_not_found(app: Quart) -> None:
    admin, _ = await logged_in(app, "boss@example.com", role="admin")
    ann, _ = await logged_in(app, "ann@example.com")
    _, eve_id = await logged_in(app, "eve@example.com")
    made = await make_token(ann)
    for method, path in (
        ("DELETE", f"/api/admin/users/{eve_id}/tokens/{made['id']}"),
        ("GET", "/api/admin/users/999/tokens"),
        ("DELETE", f"/api/admin/users/999/tokens/{made['id']}"),
    ):
        response = await admin.open(path, method=method, json=None)
        assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")
    assert await body(await admin.get(f"/api/admin/users/{eve_id}/tokens")) == []
    assert await status_with(app, made) == 200
