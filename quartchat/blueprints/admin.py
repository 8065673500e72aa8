"""`/api/admin/users` and `/api/invites`: what administrators do with accounts;
`/api/admin/upstream`: how the service's connection to the model provider fares; and
`/api/admin/policies`: which models and how much each role and user may use."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel
from quart import Blueprint, Response, current_app, request
from quart_schema import document_response

from ..auth.accounts import forbidden
from ..config import Settings
from ..openapi import Described, Ok, document_errors, link
from ..upstream import client as upstream_client
from ..upstream.client import DefaultSource, UpstreamClient
from ..usage.policies import Policies, Policy, check_subject
from ..usage.policies import micros as to_micros
from . import admission
from .admission import end_streams
from .auth import (
    EMAIL,
    MAYBE_EMAIL,
    NewPassword,
    Role,
    Strict,
    Tokens,
    User,
    accounts,
    json,
    principal,
)
from .common import answer
from .validation import INTEGRAL, MAX_ROW_ID, path_converters, takes

blueprint = Blueprint("admin", __name__, url_prefix="/api")
blueprint.record_once(path_converters)


class Users(RootModel[list[User]]):
    """Users, by id."""


@blueprint.get("/admin/users")
@document_response(Users)
@document_errors(401, 403)
async def users() -> Response:
    """Users, by id, 100 at a time (`?after=<last id>` for the next page). Admins only."""
    after = request.args.get("after", "")
    start = min(int(after), MAX_ROW_ID) if after.isascii() and after.isdigit() else 0
    return json(await accounts().list_users(principal(), start))


class NewUser(Strict):
    email: str = EMAIL
    password: NewPassword
    role: Role = "user"


@blueprint.post("/admin/users")
@takes(NewUser, "new user")
@document_response(User, 201)
@document_errors(400, 401, 403, 409, 413, 415)
async def create_user(body: NewUser) -> Response:
    """Create a user with a first password. Admins only."""
    return json(
        await accounts().create_user(principal(), body.email, body.password, body.role), 201
    )


class UserChange(Strict):
    status: Literal["active", "disabled"] | None = None
    role: Role | None = None
    password: NewPassword | None = None
    revoke_tokens: bool = Field(
        True, description="With `password`: revoke the user's API tokens too"
    )


class ChangedUser(User):
    """The user, changed; `revoked_tokens` API tokens were revoked with a password reset."""

    revoked_tokens: int


@blueprint.patch("/admin/users/<row_id:user_id>")
@takes(UserChange, "user change")
@document_response(ChangedUser)
@document_errors(400, 401, 403, 404, 409, 413, 415)
async def change_user(user_id: int, body: UserChange) -> Response:
    """Enable, disable or approve a user, change the role, or reset the password.

    Disabling and a password reset end the user's sessions at once (and the replies streaming on
    them); a password reset revokes their API tokens too (and ends their streams) unless
    `revoke_tokens` is false, and a disabled user's tokens stop working. The last active admin
    cannot be disabled or demoted. Admins only.
    """
    changed = await accounts().change_user(
        principal(),
        user_id,
        status=body.status,
        role=body.role,
        password=body.password,
        revoke_tokens=body.revoke_tokens,
    )
    if changed["status"] != "active":
        end_streams(user_id)
    elif body.password is not None:
        end_streams(user_id, "session")  # its sessions ended
        if body.revoke_tokens:
            end_streams(user_id, "token")
    return json(changed)


@blueprint.get("/admin/users/<row_id:user_id>/tokens")
@document_response(Tokens)
@document_errors(401, 403, 404)
async def user_tokens(user_id: int) -> Response:
    """A user's API tokens (not revoked; expired ones too). Admins only."""
    return json(await accounts().user_tokens(principal(), user_id))


@blueprint.delete("/admin/users/<row_id:user_id>/tokens/<row_id:token_id>")
@document_response(Ok)
@document_errors(401, 403, 404)
async def revoke_user_token(user_id: int, token_id: int) -> Response:
    """Revoke one of a user's API tokens, at once. Admins only."""
    await accounts().revoke_user_token(principal(), user_id, token_id)
    end_streams(user_id, "token", str(token_id))
    return json({"ok": True})


class Invite(BaseModel):
    """An invite not used yet."""

    id: str
    email: str | None
    role: Role
    created_at: datetime
    expires_at: datetime


class Invites(RootModel[list[Invite]]):
    """Invites not used yet."""


@blueprint.get("/invites")
@document_response(Invites)
@document_errors(401, 403)
async def invites() -> Response:
    """Invites not used yet (an admin sees all; others, under the invite policy, their own)."""
    return json(await accounts().invites(principal()))


class NewInvite(Strict):
    email: str | None = MAYBE_EMAIL
    role: Role = "user"


class InviteLink(Invite, Described):
    """The invite made; its link is `/invite?token=…`. The token is shown this once."""

    token: str

    response_links = {"withdraw": link("delete_withdraw_invite", invite_id="$response.body#/id")}


@blueprint.post("/invites")
@takes(NewInvite, "invite")
@document_response(InviteLink, 201)
@document_errors(400, 401, 403, 413, 415)
async def create_invite(body: NewInvite) -> Response:
    """Make an invite link, valid for 7 days, used once.

    The answer holds its token this once; the link is `/invite?token=…`.
    """
    return json(await accounts().invite(principal(), body.role, body.email), 201)


@blueprint.delete("/invites/<invite_id>")
@document_response(Ok)
@document_errors(401, 403, 404)
async def withdraw_invite(invite_id: str) -> Response:
    """Withdraw an invite before it is used."""
    await accounts().withdraw_invite(principal(), invite_id)
    return json({"ok": True})


class AuthFailure(BaseModel):
    """The upstream's last refusal of our credentials (in this worker process, since it started)."""

    status: int = Field(description="401 or 403")
    message: str = Field(description="The upstream's own words, credentials redacted")
    at: datetime


class UpstreamState(BaseModel):
    """One upstream, as this worker process sees it (never its URL: it may hold a password)."""

    name: str
    default: bool = Field(description="Whether requests that name no model go to it")
    up: bool = Field(
        description="Whether its GET /models could be read (or its allow-list names them)"
    )
    models: int = Field(description="How many models it offers, its allow-list applied")
    last_auth_failure: AuthFailure | None


class UpstreamStatus(BaseModel):
    """The service's connection to the model provider, as this worker process sees it."""

    default_model: str = Field(description="The model of a request that names none")
    default_source: DefaultSource = Field(
        description="Where the default comes from: OPENAI_MODEL, the upstream's list (OPENAI_MODEL "
        "unset), MODELS_ALLOWED's first name, or the built-in one (no list could be read)"
    )
    default_listed: bool | None = Field(
        description="Whether the upstream lists the default model (null: its list could not be read)"
    )
    models_fetched: bool = Field(description="Whether the upstream's GET /models could be read")
    last_auth_failure: AuthFailure | None
    upstreams: list[UpstreamState] = Field(
        description="Every upstream (UPSTREAMS_FILE's and the environment's), the default first"
    )


@blueprint.get("/admin/upstream")
@document_response(UpstreamStatus)
@document_errors(401, 403)
async def upstream_status() -> Response:
    """The upstream's status: the default model, whether it is listed, the last auth failure.

    From the cached model list (MODELS_CACHE_SECONDS) and what this worker process has seen since it
    started. Admins only.
    """
    if not principal().is_admin:
        raise forbidden()
    upstream: UpstreamClient = current_app.extensions["upstream"]
    listed = await upstream.model_list()
    failure = upstream.last_auth_failure
    registry = admission.registry()
    states = []
    for client in registry.clients.values():
        offered = await registry.offers(client)
        states.append(
            UpstreamState(
                name=client.name,
                default=client is registry.default,
                up=offered is not None,
                models=len(offered or ()),
                last_auth_failure=_failure(client.last_auth_failure),
            )
        )
    status = UpstreamStatus(
        default_model=listed.default,
        default_source=listed.source,
        default_listed=listed.default_listed,
        models_fetched=listed.fetched,
        last_auth_failure=_failure(failure),
        upstreams=states,
    )
    return answer(UpstreamStatus, status.model_dump(mode="json"))


def _failure(failure: upstream_client.AuthFailure | None) -> AuthFailure | None:
    if failure is None:
        return None
    return AuthFailure(status=failure.status, message=failure.message, at=failure.at)


class PolicyFields(Strict):
    """What a policy sets; null: not set here (the role's, or the settings' default, applies).
    A limit of 0 lifts the limit the role or the default sets."""

    models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=1000, description="The only models allowed; null: every model"
    )
    requests_per_minute: Annotated[int, Field(ge=0, le=1_000_000_000), INTEGRAL] | None = None
    tokens_per_day: Annotated[int, Field(ge=0, le=10**15), INTEGRAL] | None = None
    cost_per_month: float | None = Field(None, ge=0, le=10**9, description="US dollars")


class PolicyOut(PolicyFields):
    """One subject's policy."""

    subject: str = Field(description="role:user, role:admin or user:<id>")


class Defaults(BaseModel):
    """The settings' limits (DEFAULT_*): what applies where no policy says otherwise."""

    requests_per_minute: int | None
    tokens_per_day: int | None
    cost_per_month: float | None


class PolicyList(BaseModel):
    """The settings' defaults, and every policy (roles first, then users by id)."""

    defaults: Defaults
    policies: list[PolicyOut]


def _policies() -> Policies:
    if not principal().is_admin:
        raise forbidden()
    service: Policies = current_app.extensions["policies"]
    return service


@blueprint.get("/admin/policies")
@document_response(PolicyList)
@document_errors(401, 403)
async def policies() -> Response:
    """Who may use which models, and how much: the defaults and every policy. Admins only."""
    service = _policies()
    settings: Settings = current_app.config["QUARTCHAT"]
    defaults = Defaults(
        requests_per_minute=settings.default_requests_per_minute,
        tokens_per_day=settings.default_tokens_per_day,
        cost_per_month=settings.default_cost_per_month,
    )
    rows = [p.public() for p in await service.all()]
    return answer(PolicyList, {"defaults": defaults.model_dump(), "policies": rows})


@blueprint.put("/admin/policies/<subject:subject>")
@takes(PolicyFields, "policy")
@document_response(PolicyOut)
@document_errors(400, 401, 403, 404, 413, 415)
async def put_policy(subject: str, body: PolicyFields) -> Response:
    """Set the policy of a role (`role:user`, `role:admin`) or a user (`user:<id>`).

    A user's fields override their role's, which override the settings' defaults; null leaves a
    field to them. Takes effect in this process at once, in others within seconds. Admins only.
    """
    service = _policies()
    check_subject(subject)
    policy = Policy(
        subject,
        tuple(body.models) if body.models is not None else None,
        body.requests_per_minute,
        body.tokens_per_day,
        to_micros(body.cost_per_month),
    )
    return answer(PolicyOut, (await service.put(policy)).public())


@blueprint.delete("/admin/policies/<subject:subject>")
@document_response(Ok)
@document_errors(401, 403, 404)
async def delete_policy(subject: str) -> Response:
    """Remove a role's or a user's policy: the role's, or the defaults, apply again. Admins only."""
    await _policies().delete(subject)
    return json({"ok": True})
