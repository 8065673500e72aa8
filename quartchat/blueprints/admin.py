"""`/api/admin/users` and `/api/invites`: what administrators do with accounts."""

from __future__ import annotations

from typing import Literal

from quart import Blueprint, Response, request
from quart_schema import document_request

from ..openapi import document_errors
from .auth import EMAIL, MAYBE_EMAIL, MAYBE_PASSWORD, PASSWORD, Strict, accounts, json, principal
from .validation import parse

blueprint = Blueprint("admin", __name__, url_prefix="/api")


@blueprint.get("/admin/users")
@document_errors(401, 403)
async def users() -> Response:
    """Users, by id, 100 at a time (`?after=<last id>` for the next page). Admins only."""
    after = request.args.get("after", "0")
    return json(await accounts().list_users(principal(), int(after) if after.isdigit() else 0))


class NewUser(Strict):
    email: str = EMAIL
    password: str = PASSWORD
    role: Literal["admin", "user"] = "user"


@blueprint.post("/admin/users")
@document_request(NewUser)
@document_errors(400, 401, 403, 409, 415)
async def create_user() -> Response:
    """Create a user with a first password. Admins only."""
    body = await parse(NewUser, "new user")
    return json(
        await accounts().create_user(principal(), body.email, body.password, body.role), 201
    )


class UserChange(Strict):
    status: Literal["active", "disabled"] | None = None
    role: Literal["admin", "user"] | None = None
    password: str | None = MAYBE_PASSWORD


@blueprint.patch("/admin/users/<int:user_id>")
@document_request(UserChange)
@document_errors(400, 401, 403, 404, 409, 415)
async def change_user(user_id: int) -> Response:
    """Enable, disable or approve a user, change the role, or reset the password.

    Disabling and a password reset end the user's sessions at once; a disabled user's API tokens
    stop working too. The last active admin cannot be disabled or demoted. Admins only.
    """
    body = await parse(UserChange, "user change")
    changed = await accounts().change_user(
        principal(), user_id, status=body.status, role=body.role, password=body.password
    )
    return json(changed)


class NewInvite(Strict):
    email: str | None = MAYBE_EMAIL
    role: Literal["admin", "user"] = "user"


@blueprint.get("/invites")
@document_errors(401, 403)
async def invites() -> Response:
    """Invites not used yet (an admin sees all; others, under the invite policy, their own)."""
    return json(await accounts().invites(principal()))


@blueprint.post("/invites")
@document_request(NewInvite)
@document_errors(400, 401, 403, 415)
async def create_invite() -> Response:
    """Make an invite link, valid for 7 days, used once.

    The answer holds its token this once; the link is `/invite?token=…`.
    """
    body = await parse(NewInvite, "invite")
    return json(await accounts().invite(principal(), body.role, body.email), 201)


@blueprint.delete("/invites/<invite_id>")
@document_errors(401, 403, 404)
async def withdraw_invite(invite_id: str) -> Response:
    """Withdraw an invite before it is used."""
    await accounts().withdraw_invite(principal(), invite_id)
    return json({"ok": True})
