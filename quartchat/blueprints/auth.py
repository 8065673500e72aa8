"""`/api/auth`: logging in and out, the first admin, sign-up and invites, my account.

Only with AUTH_MODE=accounts. The routes marked `public` answer without a principal; every other
route needs one (quartchat/app.py's gate), so `principal()` here never returns None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, RootModel
from quart import Blueprint, Response, current_app, request
from quart_auth import logout_user
from quart_schema import document_response

from ..auth.accounts import Accounts
from ..auth.devices import Devices
from ..auth.gate import public
from ..auth.passwords import MAX_LENGTH, MIN_LENGTH
from ..auth.principal import Networks, Principal, current_principal, login_cookie
from ..auth.tokens import DEFAULT_DAYS, MAX_DAYS
from ..auth.users import EMAIL_MAX_LENGTH, EMAIL_PATTERN
from ..openapi import Described, Ok, document_errors, link
from .admission import end_streams
from .validation import INTEGRAL, Empty, path_converters, takes

blueprint = Blueprint("auth", __name__, url_prefix="/api/auth")
blueprint.record_once(path_converters)

EMAIL = Field(min_length=3, max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN)
MAYBE_EMAIL = Field(None, min_length=3, max_length=EMAIL_MAX_LENGTH, pattern=EMAIL_PATTERN)
PASSWORD = Field(min_length=1, max_length=MAX_LENGTH)
# A new password: the schema says how short is too short; the accounts service refuses it,
# with its own code (400 WEAK_PASSWORD) rather than a validation error.
NewPassword = Annotated[
    str, Field(min_length=1, max_length=MAX_LENGTH, json_schema_extra={"minLength": MIN_LENGTH})
]
Role = Literal["admin", "user"]


def accounts() -> Accounts:
    service: Accounts = current_app.extensions["accounts"]
    return service


def devices() -> Devices:
    service: Devices = current_app.extensions["devices"]
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


class LoginRequest(Strict):
    email: str = EMAIL
    password: str = PASSWORD


@blueprint.post("/login")
@public
@takes(LoginRequest, "login")
@document_response(Ok)
@document_errors(400, 401, 403, 413, 415, 429)
async def login(body: LoginRequest) -> Response:
    """Log in with email and password.

    Starts a new session (a new cookie, whatever the browser had). Ten attempts a minute for one
    account or one address answer 429 with Retry-After; a browser that logged in to the account
    before has ten of its own.
    """
    ip, user_agent = client()
    token, device = await accounts().login(
        body.email, body.password, ip, user_agent, devices().current()
    )
    login_cookie(token)
    response = json({"ok": True})
    devices().remember(response, device)
    return response


@blueprint.post("/logout")
@takes(Empty)
@document_response(Ok)
@document_errors(400, 401, 403, 413, 415)
async def logout(body: Empty) -> Response:
    """Log out this browser.

    Ends the session on the server, so its cookie is worth nothing from now on.
    """
    await accounts().logout(principal())
    if principal().via == "session":
        end_streams(principal().user_id, "session", principal().credential)
    logout_user()
    return json({"ok": True})


class LogoutEverywhere(Strict):
    revoke_tokens: bool = Field(True, description="Revoke all my API tokens too")


class TokensRevoked(BaseModel):
    """Done; `revoked_tokens` API tokens were revoked with it."""

    ok: Literal[True]
    revoked_tokens: int


@blueprint.post("/logout-everywhere")
@takes(LogoutEverywhere, "log out everywhere")
@document_response(TokensRevoked)
@document_errors(400, 401, 403, 413, 415)
async def logout_everywhere(body: LogoutEverywhere) -> Response:
    """Log out every browser, and revoke my API tokens.

    Ends all of the user's sessions, this one too, and revokes every API token unless
    `revoke_tokens` is false. The answer says how many tokens were revoked.
    """
    revoked = await accounts().logout_everywhere(principal(), body.revoke_tokens)
    end_streams(principal().user_id, None if body.revoke_tokens else "session")
    logout_user()
    return json({"ok": True, "revoked_tokens": revoked})


class State(BaseModel):
    """What the login page needs to know."""

    setup_required: bool
    signup: Literal["closed", "invite", "approval", "open"]


@blueprint.get("/state")
@public
@document_response(State)
@document_errors(401)
async def state() -> Response:
    """Whether the first admin is still to be made, and the sign-up policy."""
    return json(await accounts().setup_state())


class SetupRequest(Strict):
    token: str = Field(min_length=1, max_length=200)
    email: str = EMAIL
    password: NewPassword


@blueprint.post("/setup")
@public
@takes(SetupRequest, "setup request")
@document_response(Ok, 201)
@document_errors(400, 401, 403, 409, 413, 415, 429)
async def set_up(body: SetupRequest) -> Response:
    """Create the first admin.

    Needs the one-time setup token the service printed at start; works once, while no admin
    exists. Ten attempts a minute from one address, then 429 with Retry-After.
    """
    ip, user_agent = client()
    token = await accounts().set_up(body.token, body.email, body.password, ip, user_agent)
    login_cookie(token)
    return json({"ok": True}, 201)


class SignupRequest(Strict):
    email: str = EMAIL
    password: NewPassword


class SignedUp(BaseModel):
    """Signed up, and logged in (a new session cookie)."""

    ok: Literal[True]
    pending: Literal[False]


class AwaitingApproval(BaseModel):
    """Signed up; an administrator has yet to approve the account."""

    ok: Literal[True]
    pending: Literal[True]


@blueprint.post("/signup")
@public
@takes(SignupRequest, "sign-up")
@document_response(SignedUp, 201)
@document_response(AwaitingApproval, 202)
@document_errors(400, 401, 403, 409, 413, 415)
async def sign_up(body: SignupRequest) -> Response:
    """Sign up, where the policy allows it.

    `open`: logged in at once. `approval`: the account waits for an administrator (202).
    Refused (403 SETUP_PENDING) until the first admin exists.
    """
    ip, user_agent = client()
    token = await accounts().sign_up(body.email, body.password, ip, user_agent)
    if token is None:
        return json({"ok": True, "pending": True}, 202)
    login_cookie(token)
    return json({"ok": True, "pending": False}, 201)


class InviteToken(Strict):
    token: str = Field(min_length=1, max_length=200)


class Invitation(BaseModel):
    """What an invite is for: the email it is bound to (or none: any), and the role."""

    email: str | None
    role: Role


@blueprint.post("/invite")
@public
@takes(InviteToken, "invite")
@document_response(Invitation)
@document_errors(400, 401, 403, 404, 413, 415)
async def invitation(body: InviteToken) -> Response:
    """What an invite is for: the email it is bound to, if any, and the role."""
    return json(await accounts().invitation(body.token))


class AcceptInvite(Strict):
    token: str = Field(min_length=1, max_length=200)
    email: str | None = MAYBE_EMAIL
    password: NewPassword


@blueprint.post("/invite/accept")
@public
@takes(AcceptInvite, "invite acceptance")
@document_response(Ok, 201)
@document_errors(400, 401, 403, 404, 409, 413, 415, 429)
async def accept_invite(body: AcceptInvite) -> Response:
    """Accept an invite: make the account and log in.

    Ten attempts a minute from one address, then 429 with Retry-After.
    """
    ip, user_agent = client()
    token = await accounts().accept_invite(body.token, body.email, body.password, ip, user_agent)
    login_cookie(token)
    return json({"ok": True}, 201)


class User(BaseModel):
    """A user account."""

    id: int
    email: str
    role: Role
    status: Literal["active", "pending", "disabled"]
    created_at: datetime


class Me(User):
    """The logged-in user, and by what: a session cookie, an API token or a trusted header."""

    via: Literal["session", "token", "header"]


@blueprint.get("/me")
@document_response(Me)
@document_errors(401, 403, 404)
async def me() -> Response:
    """The logged-in user."""
    return json(await accounts().me(principal()))


class PasswordChange(Strict):
    current: str = PASSWORD
    new: NewPassword


@blueprint.post("/password")
@takes(PasswordChange, "password change")
@document_response(TokensRevoked)
@document_errors(400, 401, 403, 413, 415, 429)
async def change_password(body: PasswordChange) -> Response:
    """Change my password.

    Every session ends at once and every API token is revoked; this browser gets a new session.
    A wrong current password counts with the failed logins (429 after ten a minute).
    """
    ip, user_agent = client()
    token, revoked = await accounts().change_password(
        principal(), body.current, body.new, ip, user_agent
    )
    end_streams(principal().user_id)  # its other sessions ended, its API tokens revoked
    if token:
        login_cookie(token)
    return json({"ok": True, "revoked_tokens": revoked})


class Session(BaseModel):
    """Where and when a user is logged in."""

    id: str
    created_at: datetime
    last_seen_at: datetime
    user_agent: str
    ip: str
    current: bool = Field(description="Whether it is the session of this request")


class Sessions(RootModel[list[Session]]):
    """My sessions."""


@blueprint.get("/sessions")
@document_response(Sessions)
@document_errors(401, 403)
async def sessions() -> Response:
    """My sessions: where and when I am logged in."""
    return json(await accounts().sessions(principal()))


@blueprint.delete("/sessions/<session_id>")
@document_response(Ok)
@document_errors(401, 403, 404)
async def end_session(session_id: str) -> Response:
    """End one of my sessions."""
    await accounts().end_session(principal(), session_id)
    end_streams(principal().user_id, "session", session_id)
    return json({"ok": True})


class Token(BaseModel):
    """An API token, by its prefix (the token itself is shown only when made)."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="Written at most every 10 minutes")
    expires_at: datetime | None = Field(description="None: valid until revoked")


class Tokens(RootModel[list[Token]]):
    """API tokens not revoked (expired ones too, until revoked)."""


@blueprint.get("/tokens")
@document_response(Tokens)
@document_errors(401, 403)
async def tokens() -> Response:
    """My API tokens (their prefixes; a token itself is shown only when made)."""
    return json(await accounts().tokens(principal()))


class TokenRequest(Strict):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: Annotated[int, Field(ge=1, le=MAX_DAYS), INTEGRAL] | None = Field(
        DEFAULT_DAYS, description="null: valid until revoked"
    )
    password: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_LENGTH,
        description="My password; needed unless this session began in the last 10 minutes",
    )


class NewToken(Token, Described):
    """The API token made: send it as `Authorization: Bearer qc_…`. Shown this once."""

    token: str

    response_links = {"revoke": link("delete_revoke_token", token_id="$response.body#/id")}


@blueprint.post("/tokens")
@takes(TokenRequest, "token request")
@document_response(NewToken, 201)
@document_errors(400, 401, 403, 409, 413, 415, 429)
async def create_token(body: TokenRequest) -> Response:
    """Make an API token.

    Only from a logged-in browser (403 `SESSION_REQUIRED` with a token or a proxy's header),
    with the password unless the session began in the last 10 minutes (403 `PASSWORD_REQUIRED`;
    a wrong one counts with the failed logins). Valid for `expires_in_days` (90 unless given;
    null: until revoked). The answer holds the token (`qc_…`) this once; it is stored only as a
    hash.
    """
    ip, _ = client()
    made = await accounts().create_token(
        principal(), body.name, body.expires_in_days, body.password, ip
    )
    return json(made, 201)


@blueprint.delete("/tokens/<row_id:token_id>")
@document_response(Ok)
@document_errors(401, 403, 404)
async def revoke_token(token_id: int) -> Response:
    """Revoke one of my API tokens, at once."""
    await accounts().revoke_token(principal(), token_id)
    end_streams(principal().user_id, "token", str(token_id))
    return json({"ok": True})
