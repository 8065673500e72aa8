"""Sign-up policies, invites, the admin's powers, tokens and sessions, trusted proxies, cookies."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat.auth import sessions as sessions_module

from ..conftest import SECRET, assert_error
from .conftest import PASSWORD, log_in, make_user, session_cookie, set_cookie


async def body(response: Any) -> Any:
    return orjson.loads(await response.get_data())


async def admin_client(app: Quart) -> Client:
    await make_user(app, "boss@example.com", role="admin")
    client = app.test_client()
    await log_in(client, "boss@example.com")
    return client


# -- sign-up policies -----------------------------------------------------------------------------


async def test_by_default_nobody_signs_up_on_their_own(client: Client) -> None:
    assert (await body(await client.get("/api/auth/state")))["signup"] == "closed"
    response = await client.post(
        "/api/auth/signup", json={"email": "a@example.com", "password": PASSWORD}
    )
    assert_error(response.status_code, await response.get_data(), 403, "SIGNUP_CLOSED")


class TestOpenSignup:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"signup_policy": "open"}

    @pytest.fixture(autouse=True)
    async def _set_up(self, app: Quart) -> None:
        await make_user(app, "boss@example.com", role="admin")  # sign-up opens after setup

    async def test_anyone_signs_up_and_is_logged_in(self, client: Client) -> None:
        response = await client.post(
            "/api/auth/signup", json={"email": "new@example.com", "password": PASSWORD}
        )
        assert response.status_code == 201
        assert (await body(await client.get("/api/auth/me")))["email"] == "new@example.com"

    async def test_an_email_is_taken_once(self, app: Quart, client: Client) -> None:
        await make_user(app, "new@example.com")
        response = await client.post(
            "/api/auth/signup", json={"email": "NEW@example.com", "password": PASSWORD}
        )
        assert_error(response.status_code, await response.get_data(), 409, "EMAIL_TAKEN")

    async def test_a_short_password_is_refused(self, client: Client) -> None:
        response = await client.post(
            "/api/auth/signup", json={"email": "new@example.com", "password": "short"}
        )
        assert_error(response.status_code, await response.get_data(), 400, "WEAK_PASSWORD")


class TestApprovalSignup:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"signup_policy": "approval"}

    async def test_a_new_account_waits_until_an_admin_approves_it(
        self, app: Quart, client: Client
    ) -> None:
        admin = await admin_client(app)
        response = await client.post(
            "/api/auth/signup", json={"email": "new@example.com", "password": PASSWORD}
        )
        assert response.status_code == 202
        assert (await client.get("/api/auth/me")).status_code == 401
        waiting = await client.post(
            "/api/auth/login", json={"email": "new@example.com", "password": PASSWORD}
        )
        assert_error(waiting.status_code, await waiting.get_data(), 403, "ACCOUNT_PENDING")
        listed = await body(await admin.get("/api/admin/users"))
        pending = next(u for u in listed if u["email"] == "new@example.com")
        assert pending["status"] == "pending"
        approve = await admin.patch(f"/api/admin/users/{pending['id']}", json={"status": "active"})
        assert approve.status_code == 200
        await log_in(client, "new@example.com")


# -- invites -------------------------------------------------------------------------------------


async def test_an_invite_link_makes_one_account_and_logs_it_in(app: Quart) -> None:
    admin = await admin_client(app)
    made = await body(await admin.post("/api/invites", json={"email": "Guest@Example.com"}))
    guest = app.test_client()
    about = await body(await guest.post("/api/auth/invite", json={"token": made["token"]}))
    assert about == {"email": "guest@example.com", "role": "user"}
    accepted = await guest.post(
        "/api/auth/invite/accept", json={"token": made["token"], "password": PASSWORD}
    )
    assert accepted.status_code == 201
    assert (await body(await guest.get("/api/auth/me")))["email"] == "guest@example.com"
    again = await app.test_client().post(
        "/api/auth/invite/accept",
        json={"token": made["token"], "email": "other@example.com", "password": PASSWORD},
    )
    assert_error(again.status_code, await again.get_data(), 404, "INVALID_INVITE")


async def test_a_withdrawn_invite_no_longer_works(app: Quart) -> None:
    admin = await admin_client(app)
    made = await body(await admin.post("/api/invites", json={}))
    assert [i["id"] for i in await body(await admin.get("/api/invites"))] == [made["id"]]
    assert (await admin.delete(f"/api/invites/{made['id']}")).status_code == 200
    response = await app.test_client().post(
        "/api/auth/invite/accept",
        json={"token": made["token"], "email": "x@example.com", "password": PASSWORD},
    )
    assert_error(response.status_code, await response.get_data(), 404, "INVALID_INVITE")


async def test_a_user_cannot_invite_under_the_closed_policy(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    response = await ann.post("/api/invites", json={})
    assert_error(response.status_code, await response.get_data(), 403, "FORBIDDEN")


class TestInvitePolicy:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"signup_policy": "invite"}

    async def test_any_user_may_invite_users_but_not_admins(self, app: Quart) -> None:
        await make_user(app, "ann@example.com")
        ann = app.test_client()
        await log_in(ann, "ann@example.com")
        assert (await ann.post("/api/invites", json={})).status_code == 201
        response = await ann.post("/api/invites", json={"role": "admin"})
        assert_error(response.status_code, await response.get_data(), 403, "FORBIDDEN")


# -- the admin's powers --------------------------------------------------------------------------


async def test_only_admins_reach_the_admin_api(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    for method, path, payload in (
        ("GET", "/api/admin/users", None),
        ("POST", "/api/admin/users", {"email": "x@example.com", "password": PASSWORD}),
        ("PATCH", "/api/admin/users/1", {"role": "admin"}),
    ):
        response = await ann.open(path, method=method, json=payload)
        assert_error(response.status_code, await response.get_data(), 403, "FORBIDDEN")


async def test_an_admin_creates_a_user_who_can_then_log_in(app: Quart) -> None:
    admin = await admin_client(app)
    response = await admin.post(
        "/api/admin/users", json={"email": "made@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    assert (await body(response))["role"] == "user"
    await log_in(app.test_client(), "made@example.com")


async def test_a_password_reset_by_an_admin_ends_the_user_s_sessions(app: Quart) -> None:
    admin = await admin_client(app)
    user = await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    reset = await admin.patch(f"/api/admin/users/{user.id}", json={"password": "reset by admin"})
    assert reset.status_code == 200
    assert (await ann.get("/api/auth/me")).status_code == 401
    await log_in(app.test_client(), "ann@example.com", "reset by admin")


async def test_a_role_change_takes_effect_on_the_next_request(app: Quart) -> None:
    admin = await admin_client(app)
    user = await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    assert (await ann.get("/api/admin/users")).status_code == 403
    assert (
        await admin.patch(f"/api/admin/users/{user.id}", json={"role": "admin"})
    ).status_code == 200
    assert (await ann.get("/api/admin/users")).status_code == 200


async def test_the_last_admin_cannot_be_disabled_or_demoted(app: Quart) -> None:
    admin = await admin_client(app)
    me = await body(await admin.get("/api/auth/me"))
    for change in ({"status": "disabled"}, {"role": "user"}):
        response = await admin.patch(f"/api/admin/users/{me['id']}", json=change)
        assert_error(response.status_code, await response.get_data(), 409, "LAST_ADMIN")


async def test_an_unknown_user_is_a_404(app: Quart) -> None:
    admin = await admin_client(app)
    response = await admin.patch("/api/admin/users/999", json={"status": "disabled"})
    assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")


# -- my tokens and sessions ------------------------------------------------------------------------


async def test_a_token_is_shown_once_then_only_its_prefix(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    made = await body(await ann.post("/api/auth/tokens", json={"name": "laptop script"}))
    assert made["token"].startswith("qc_") and len(made["token"]) > 40
    listed = await body(await ann.get("/api/auth/tokens"))
    assert listed == [{k: v for k, v in made.items() if k != "token"}]
    assert made["token"].startswith(listed[0]["prefix"])
    assert made["token"] not in orjson.dumps(listed).decode()


async def test_another_user_s_token_or_session_is_not_found(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    await make_user(app, "eve@example.com")
    ann, eve = app.test_client(), app.test_client()
    await log_in(ann, "ann@example.com")
    await log_in(eve, "eve@example.com")
    token = await body(await ann.post("/api/auth/tokens", json={"name": "x"}))
    session = (await body(await ann.get("/api/auth/sessions")))[0]
    for path in (f"/api/auth/tokens/{token['id']}", f"/api/auth/sessions/{session['id']}"):
        response = await eve.delete(path)
        assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")
    assert (await ann.get("/api/auth/me")).status_code == 200
    assert len(await body(await ann.get("/api/auth/tokens"))) == 1


async def test_ending_one_session_logs_that_browser_out(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    laptop, phone = app.test_client(), app.test_client()
    await log_in(laptop, "ann@example.com")
    await log_in(phone, "ann@example.com")
    listed = await body(await laptop.get("/api/auth/sessions"))
    assert sorted(s["current"] for s in listed) == [False, True]
    other = next(s for s in listed if not s["current"])
    assert (await laptop.delete(f"/api/auth/sessions/{other['id']}")).status_code == 200
    assert (await phone.get("/api/auth/me")).status_code == 401
    assert (await laptop.get("/api/auth/me")).status_code == 200


async def test_log_out_everywhere_ends_every_session(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    laptop, phone = app.test_client(), app.test_client()
    await log_in(laptop, "ann@example.com")
    await log_in(phone, "ann@example.com")
    assert (await phone.get("/api/auth/me")).status_code == 200
    assert (await laptop.post("/api/auth/logout-everywhere", json={})).status_code == 200
    for browser in (laptop, phone):
        assert (await browser.get("/api/auth/me")).status_code == 401


# -- the cookie ---------------------------------------------------------------------------------


async def test_a_session_in_use_slides_its_cookie_forward(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    quiet = await ann.get("/api/auth/me")
    assert "Set-Cookie" not in quiet.headers
    app.extensions["accounts"].cache._entries.clear()
    monkeypatch.setattr(sessions_module, "TOUCH_AFTER", sessions_module.TOUCH_AFTER * 0)
    renewed = await ann.get("/api/auth/me")
    assert renewed.headers["Set-Cookie"].startswith("quartchat_session=")
    assert "Max-Age=2592000" in renewed.headers["Set-Cookie"]


async def test_over_plain_http_the_cookie_is_not_marked_secure(app: Quart) -> None:
    await make_user(app, "ann@example.com")
    response = await app.test_client().post(
        "/api/auth/login", json={"email": "ann@example.com", "password": PASSWORD}
    )
    assert "Secure" not in set_cookie(response)


class TestBehindAProxy:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"trusted_proxies": "10.0.0.0/8", "auth_trusted_header": "Remote-Email"}

    async def login_via(self, app: Quart, peer: str, **headers: str) -> Any:
        await make_user(app, "ann@example.com")
        return await app.test_client().post(
            "/api/auth/login",
            json={"email": "ann@example.com", "password": PASSWORD},
            headers=headers,
            scope_base={"client": (peer, 5000)},
        )

    async def test_https_at_a_trusted_proxy_marks_the_cookie_secure(self, app: Quart) -> None:
        response = await self.login_via(app, "10.0.0.2", **{"X-Forwarded-Proto": "https"})
        assert "Secure" in set_cookie(response)

    async def test_an_untrusted_peer_saying_https_changes_nothing(self, app: Quart) -> None:
        response = await self.login_via(app, "192.0.2.7", **{"X-Forwarded-Proto": "https"})
        assert "Secure" not in set_cookie(response)

    async def test_the_trusted_header_logs_in_a_known_user_from_the_proxy_only(
        self, app: Quart
    ) -> None:
        await make_user(app, "ann@example.com")
        via_proxy = await app.test_client().get(
            "/api/auth/me",
            headers={"Remote-Email": "Ann@example.com"},
            scope_base={"client": ("10.1.2.3", 5000)},
        )
        assert (await body(via_proxy))["via"] == "header"
        forged = await app.test_client().get(
            "/api/auth/me",
            headers={"Remote-Email": "ann@example.com"},
            scope_base={"client": ("192.0.2.7", 5000)},
        )
        assert forged.status_code == 401

    async def test_an_unknown_header_user_is_not_created_under_the_closed_policy(
        self, app: Quart
    ) -> None:
        response = await app.test_client().get(
            "/api/auth/me",
            headers={"Remote-Email": "stranger@example.com"},
            scope_base={"client": ("10.1.2.3", 5000)},
        )
        assert_error(response.status_code, await response.get_data(), 403, "ACCOUNT_NOT_ACTIVE")


class TestHeaderSignupOpen:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "trusted_proxies": "10.0.0.1",
            "auth_trusted_header": "Remote-Email",
            "signup_policy": "open",
        }

    async def test_a_header_user_is_created_on_first_sight(self, app: Quart) -> None:
        await make_user(app, "boss@example.com", role="admin")  # sign-up opens after setup
        response = await app.test_client().get(
            "/api/auth/me",
            headers={"Remote-Email": "new@example.com"},
            scope_base={"client": ("10.0.0.1", 5000)},
        )
        me = await body(response)
        assert (me["email"], me["role"], me["via"]) == ("new@example.com", "user", "header")


# -- logs ----------------------------------------------------------------------------------------


async def test_log_lines_name_the_user_and_hold_no_credential(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = await make_user(app, "ann@example.com")
    ann = app.test_client()
    await log_in(ann, "ann@example.com")
    token = (await body(await ann.post("/api/auth/tokens", json={"name": "x"})))["token"]
    await app.test_client().get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quartchat.access"]
    assert lines[-1]["path"] == "/api/auth/me" and lines[-1]["user_id"] == user.id
    everything = caplog.text
    for secret in (PASSWORD, token, session_cookie(ann) or "-", SECRET):
        assert secret not in everything
