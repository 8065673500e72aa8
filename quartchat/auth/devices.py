"""The device cookie: a browser that has logged in to an account before.

A right password sets `quartchat_device`, signed with SECRET_KEY (itsdangerous, as the session
cookie) and bound to the user id, for a year. It grants nothing: it only names the rate-limit
bucket a login from this browser is counted in. A login that carries it for the account it names
is counted under the device's own key, not the account-wide one, so a guesser elsewhere filling
the account's bucket does not lock the owner out of the browser they always use; the guesser,
without the cookie, stays limited per account and per address (docs/security.md, "Guessing").
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from itsdangerous import BadData, URLSafeTimedSerializer
from quart import Response, current_app, request

from .principal import Networks

COOKIE_NAME = "quartchat_device"
LIFETIME = timedelta(days=365)
_SALT = "quartchat device cookie"


@dataclass(frozen=True, slots=True)
class Device:
    """A browser (`id`, random) that logged in to the account `user_id`."""

    user_id: int
    id: str

    @classmethod
    def new(cls, user_id: int) -> Device:
        return cls(user_id, secrets.token_urlsafe(16))


class Devices:
    """Reads and writes the device cookie; `Secure` as the session cookie decides it."""

    def __init__(self, policy: Literal["auto", "always", "never"], networks: Networks) -> None:
        self.policy = policy
        self.networks = networks

    @staticmethod
    def _signer() -> URLSafeTimedSerializer:
        # The key is read per use: the app gets it at start (quartchat/app.py), after this exists.
        return URLSafeTimedSerializer(str(current_app.secret_key), salt=_SALT)

    def current(self) -> Device | None:
        """The request's device cookie, if it is one this service signed and not too old."""
        value = request.cookies.get(COOKIE_NAME)
        if not value:
            return None
        try:
            data = self._signer().loads(value, max_age=int(LIFETIME.total_seconds()))
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        user_id, device_id = data.get("u"), data.get("d")
        if not isinstance(user_id, int) or not isinstance(device_id, str):
            return None
        return Device(user_id, device_id)

    def remember(self, response: Response, device: Device) -> None:
        """Have `response` set (or renew) the device cookie."""
        secure = self.policy == "always" or (self.policy == "auto" and self.networks.https())
        response.set_cookie(
            COOKIE_NAME,
            self._signer().dumps({"u": device.user_id, "d": device.id}),
            max_age=int(LIFETIME.total_seconds()),
            httponly=True,
            samesite="Lax",
            secure=secure,
            path="/",
        )
