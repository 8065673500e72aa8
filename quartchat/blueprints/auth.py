"""`/api/auth`: logging in and out, the first admin, sign-up and invites, my account.

Only with AUTH_MODE=accounts. The routes marked `public` answer without a principal; every other
route needs one (quartchat/app.py's gate), so `principal()` here never returns None.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, current_app, request
from quart_auth import logout_user
from quart_schema import document_request, document_response

from ..auth.accounts import Accounts
from ..auth.gate import public
from ..auth.principal import Networks, Principal, current_principal, login_cookie
from ..openapi import document_errors
from .validation import parse

blueprint = Blueprint("auth", __name__, url_prefix="/api/auth")

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+$"
EMAIL = Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN)
MAYBE_EMAIL = Field(None, min_length=3, max_length=320, pattern=EMAIL_PATTERN)
PASSWORD = Field(min_length=1, max_length=1024)
MAYBE_PASSWORD = Field(None, min_length=1, max_length=1024)


def accounts() -> Accounts:
    service: Accounts = current_app.extensions["accounts"]
    return service


def principal() -> Principal:
    found = current_principal()
    assert found is not None, "the gate lets no request without a principal reach this view"
    return found


def client() -> tuple[str, str]:
    """The caller's address and browser, for rate limits and the session list."""
    networks: Networks = current_app.extensions["networks"]
    return networks.client(), request.headers.get("User-Agent", "")[:200]


def json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, content_type="application/json")


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Me(BaseModel):
    """The logged-in user."""

    id: int
    email: str
    role: str
    status: str
    created_at: str
    via: str


class LoginRequest(Strict):
    email: str = EMAIL
    password: str = PASSWORD


@blueprint.post("/login")
@public
@document_request(LoginRequest)
@document_response(Me)
@document_errors(400, 401, 403, 415, 429)
async def login() -> Response:
    """Log in with email and password.

    Starts a new session (a new cookie, whatever the browser had). Ten failures a minute for one
    account or one address answer 429 with Retry-After.
    """
    body = await parse(LoginRequest, "login")
    ip, user_agent = client()
    token = await accounts().login(body.email, body.password, ip, user_agent)
    login_cookie(token)
    return json({"ok": True})


@blueprint.post("/logout")
@document_errors(401, 403, 415)
async def logout() -> Response:
    """Log out this browser.

    Ends the session on the server, so its cookie is worth nothing from now on.
    """
    await accounts().logout(principal())
    logout_user()
    return json({"ok": True})


@blueprint.post("/logout-everywhere")
@document_errors(401, 403, 415)
async def logout_everywhere() -> Response:
    """Log out every browser.

    Ends all of the user's sessions, this one too. API tokens stay valid (revoke those apart).
    """
    await accounts().logout_everywhere(principal())
    logout_user()
    return json({"ok": True})


class State(BaseModel):
    """What the login page needs to know."""

    setup_required: bool
    signup: str


@blueprint.get("/state")
@public
@document_response(State)
async def state() -> Response:
    """Whether the first admin is still to be made, and the sign-up policy."""
    return json(await accounts().setup_state())


class SetupRequest(Strict):
    token: str = Field(min_length=1, max_length=200)
    email: str = EMAIL
    password: str = PASSWORD


@blueprint.post("/setup")
@public
@document_request(SetupRequest)
@document_errors(400, 403, 415)
async def set_up() -> Response:
    """Create the first admin.

    Needs the one-time setup token the service printed at start; works once.
    """
    body = await parse(SetupRequest, "setup request")
    ip, user_agent = client()
    token = await accounts().set_up(body.token, body.email, body.password, ip, user_agent)
    login_cookie(token)
    return json({"ok": True}, 201)


class SignupRequest(Strict):
    email: str = EMAIL
    password: str = PASSWORD


@blueprint.post("/signup")
@public
@document_request(SignupRequest)
@document_errors(400, 403, 409, 415)
async def sign_up() -> Response:
    """Sign up, where the policy allows it.

    `open`: logged in at once. `approval`: the account waits for an administrator (202).
    """
    body = await parse(SignupRequest, "sign-up")
    ip, user_agent = client()
    token = await accounts().sign_up(body.email, body.password, ip, user_agent)
    if token is None:
        return json({"ok": True, "pending": True}, 202)
    login_cookie(token)
    return json({"ok": True, "pending": False}, 201)


class InviteToken(Strict):
    token: str = Field(min_length=1, max_length=200)


@blueprint.post("/invite")
@public
@document_request(InviteToken)
@document_errors(400, 404, 415)
async def invitation() -> Response:
    """What an invite is for: the email it is bound to, if any, and the role."""
    body = await parse(InviteToken, "invite")
    return json(await accounts().invitation(body.token))


class AcceptInvite(Strict):
    token: str = Field(min_length=1, max_length=200)
    email: str | None = MAYBE_EMAIL
    password: str = PASSWORD


@blueprint.post("/invite/accept")
@public
@document_request(AcceptInvite)
@document_errors(400, 404, 409, 415)
async def accept_invite() -> Response:
    """Accept an invite: make the account and log in."""
    body = await parse(AcceptInvite, "invite acceptance")
    ip, user_agent = client()
    token = await accounts().accept_invite(body.token, body.email, body.password, ip, user_agent)
    login_cookie(token)
    return json({"ok": True}, 201)


@blueprint.get("/me")
@document_response(Me)
@document_errors(401, 403)
async def me() -> Response:
    """The logged-in user."""
    return json(await accounts().me(principal()))


class PasswordChange(Strict):
    current: str = PASSWORD
    new: str = PASSWORD


@blueprint.post("/password")
@document_request(PasswordChange)
@document_errors(400, 401, 403, 415)
async def change_password() -> Response:
    """Change my password.

    Every session ends at once; this browser gets a new one.
    """
    body = await parse(PasswordChange, "password change")
    ip, user_agent = client()
    token = await accounts().change_password(principal(), body.current, body.new, ip, user_agent)
    if token:
        login_cookie(token)
    return json({"ok": True})


@blueprint.get("/sessions")
@document_errors(401, 403)
async def sessions() -> Response:
    """My sessions: where and when I am logged in."""
    return json(await accounts().sessions(principal()))


@blueprint.delete("/sessions/<session_id>")
@document_errors(401, 403, 404)
async def end_session(session_id: str) -> Response:
    """End one of my sessions."""
    await accounts().end_session(principal(), session_id)
    return json({"ok": True})


@blueprint.get("/tokens")
@document_errors(401, 403)
async def tokens() -> Response:
    """My API tokens (their prefixes; a token itself is shown only when made)."""
    return json(await accounts().tokens(principal()))


class TokenRequest(Strict):
    name: str = Field(min_length=1, max_length=100)


@blueprint.post("/tokens")
@document_request(TokenRequest)
@document_errors(400, 401, 403, 409, 415)
async def create_token() -> Response:
    """Make an API token.

    The answer holds the token (`qc_…`) this once; it is stored only as a hash.
    """
    body = await parse(TokenRequest, "token request")
    return json(await accounts().create_token(principal(), body.name), 201)


@blueprint.delete("/tokens/<int:token_id>")
@document_errors(401, 403, 404)
async def revoke_token(token_id: int) -> Response:
    """Revoke one of my API tokens, at once."""
    await accounts().revoke_token(principal(), token_id)
    return json({"ok": True})
