from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, abort, current_app, redirect, render_template, request
from quart.typing import ResponseReturnValue
from quart_schema import hide

from ..auth.gate import public
from ..auth.principal import Principal, current_principal

blueprint = Blueprint("ui", __name__)


def accounts_on() -> bool:
    return bool(current_app.config["QUARTCHAT"].accounts)


def accounts_only() -> None:
    """Without accounts (AUTH_MODE=none) the account pages do not exist."""
    if not accounts_on():
        abort(404)


def signed_in() -> Principal:
    principal = current_principal()
    assert principal is not None, "the gate lets no request without a principal reach this view"
    return principal


def safe_next(target: str | None) -> str:
    """`target` if it is a path on this site, else `/`.

    Where the login page goes afterwards comes from its address, which anyone can write into a
    link: a URL to another site there (`https://…`, `//host`, `/\\host`, which browsers read as
    `//host`, or one hidden by a tab or newline that browsers strip) would be an open redirect.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


@blueprint.get("/")
@hide
async def index() -> str:
    """The chat page.

    A static shell: conversations live in the browser and talk to `/api/chat/stream`.
    """
    principal = current_principal() if accounts_on() else None
    return await render_template(
        "index.html",
        default_model=current_app.extensions["upstream"].default_model_now(),
        account=principal,
    )


@blueprint.get("/docs")
@public
@hide
async def docs() -> str:
    """The API's description as a page (Swagger UI, vendored, on `/openapi.json`)."""
    return await render_template("docs.html")


@blueprint.get("/login")
@public
@hide
async def login() -> ResponseReturnValue:
    """The login page (and sign-up, where the policy allows it).

    Someone already logged in goes straight on to where the page would send them.
    """
    accounts_only()
    target = safe_next(request.args.get("next"))
    if current_principal() is not None:
        return redirect(target)
    return await render_template("login.html", next=target)


@blueprint.get("/setup")
@public
@hide
async def setup() -> str:
    """The page that makes the first admin, opened from the link the service prints at start."""
    accounts_only()
    return await render_template("setup.html")


@blueprint.get("/invite")
@public
@hide
async def invite() -> str:
    """The page where an invited person makes their account."""
    accounts_only()
    return await render_template("invite.html")


@blueprint.get("/account")
@hide
async def account() -> str:
    """My account: password, sessions, API tokens."""
    accounts_only()
    return await render_template("account.html", account=signed_in())


@blueprint.get("/admin")
@hide
async def admin() -> ResponseReturnValue:
    """Users and invites. Administrators only; anyone else gets a 403 page."""
    accounts_only()
    principal = signed_in()
    if not principal.is_admin:
        return await render_template("forbidden.html", account=principal), 403
    return await render_template("admin.html", account=principal)
