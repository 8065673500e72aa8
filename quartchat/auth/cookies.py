"""The session cookie, by quart-auth: HttpOnly, SameSite=Lax, signed with SECRET_KEY, 30 days,
sliding (renewed as the session is used), and `Secure` decided per request.

`COOKIE_SECURE=auto` (the default) marks it Secure when the browser reached the service over
https -- directly, or through a reverse proxy in TRUSTED_PROXIES that says so in
X-Forwarded-Proto; `always` and `never` override that (`never` for plain-http use on a LAN).
quart-auth fixes `Secure` once per app, so this subclass sets it before each response -- only
for the responses that write or delete the cookie: the rest leave it alone, and the per-request
cost of accounts is small enough to measure (docs/benchmarks.md, "Accounts").

The secret key that signs the cookie would also switch on Quart's own signed-cookie session,
opened on every request; nothing here uses it, so `NoSessions` keeps it off.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from typing import Literal

from quart import Quart, Response, g
from quart.sessions import SecureCookieSessionInterface
from quart.wrappers import BaseRequestWebsocket
from quart_auth import Action, QuartAuth

from ..datadir import make_private
from .principal import Networks
from .sessions import LIFETIME

COOKIE_NAME = "quartchat_session"


class SessionCookies(QuartAuth):
    def __init__(
        self, app: Quart, policy: Literal["auto", "always", "never"], networks: Networks
    ) -> None:
        self.policy = policy
        self.networks = networks
        super().__init__(
            app,
            cookie_name=COOKIE_NAME,
            cookie_http_only=True,
            cookie_samesite="Lax",
            cookie_secure=policy == "always",
            duration=int(LIFETIME.total_seconds()),
            salt="quartchat session cookie",
        )

    async def after_request(self, response: Response) -> Response:
        user = g.get(self.attribute_name)
        if user is None or user.action == Action.PASS:
            return response  # no login, logout or renewal in this request: no cookie to write
        self.cookie_secure = self.policy == "always" or (
            self.policy == "auto" and self.networks.https()
        )
        with warnings.catch_warnings():
            # quart-auth warns when a Secure cookie goes out on a plain-http request: behind a
            # TLS-terminating proxy that is exactly right.
            warnings.simplefilter("ignore")
            return await super().after_request(response)


class NoSessions(SecureCookieSessionInterface):
    """Quart's `session` stays a NullSession (writing to it raises) though a secret key is set;
    a null session is never saved."""

    async def open_session(self, app: Quart, request: BaseRequestWebsocket) -> None:
        return None


def secret_key(configured: str | None, data_dir: Path) -> str:
    """SECRET_KEY, or one generated at the first start and kept in DATA_DIR (mode 0600)."""
    if configured:
        return configured
    make_private(data_dir)
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(48)
    # O_EXCL: two workers starting at once must agree on one key.
    try:
        with open(path, "x", encoding="utf-8", opener=_private) as file:
            file.write(key)
    except FileExistsError:
        return path.read_text().strip()
    return key


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
