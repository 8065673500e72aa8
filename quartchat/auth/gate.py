"""The gate before every view: who is asking, and whether the route needs someone.

`/health`, the login, setup and invite pages, the API description and the static files stay
open, as do the API routes marked `public`; everything else needs a principal: an API route
answers 401 `UNAUTHENTICATED` without one, a page redirects to the login page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from quart import Response, current_app, g, redirect, request
from quart_auth import logout_user

from ..errors import V1_PREFIX
from .principal import Authenticator, unauthenticated

OPEN_ENDPOINTS = frozenset({"static", "openapi"})

F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """Mark a view as answering without a principal."""
    view.quartchat_public = True  # type: ignore[attr-defined]
    return view


def is_public(endpoint: str | None) -> bool:
    if endpoint is None or endpoint in OPEN_ENDPOINTS:
        return True
    view = current_app.view_functions.get(endpoint)
    return bool(getattr(view, "quartchat_public", False))


async def admit(authenticator: Authenticator) -> Response | None:
    principal = await authenticator.resolve()
    g.principal = principal
    if principal is not None:
        g.access.user_id = principal.user_id
        return None
    if authenticator.cookies.load_user().auth_id:
        logout_user()  # a cookie of an ended session: have the browser drop it
    if request.url_rule is None or is_public(request.endpoint):
        return None  # (an unknown route is a 404 either way)
    if request.path.startswith(V1_PREFIX):
        raise unauthenticated("Send a quartchat API token (qc_…) as the API key.")
    if request.path.startswith("/api/"):
        raise unauthenticated()
    target = request.full_path if request.query_string else request.path
    return redirect("/login?next=" + quote(target, safe="/"))  # type: ignore[return-value]
