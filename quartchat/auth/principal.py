"""Who is asking: the one place credentials are parsed.

Before any view runs, `Authenticator.resolve()` turns the request's credential -- an API token
(`Authorization: Bearer qc_…`), the trusted header of an identity proxy, or the session cookie --
into one `Principal`, or none. Views only ask `current_principal()`.

A credential costs at most one indexed lookup, and not even that when it was checked in the last
`CACHE_SECONDS` in this process. Logging out, revoking, disabling and password changes drop the
cached entries in the process that made them, so they take effect there on the next request;
other worker processes notice within `CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from quart import g, request
from quart_auth import AuthUser, QuartAuth, login_user, renew_login

from ..db import Database
from ..db.tables import now
from ..errors import V1_PREFIX, APIError
from . import sessions, tokens, users
from .credentials import TOKEN_PREFIX, digest

log = logging.getLogger("quartchat.auth")

CACHE_SECONDS = 2.0
# A trusted network wider than this holds more than a proxy: every container on a Docker host's
# bridge networks (172.16.0.0/12), a whole LAN. One IPv4 /24 is a compose network with a fixed
# subnet; the IPv6 analogue is one /64, the smallest subnet a LAN is given.
WIDEST_TRUSTED = {4: 24, 6: 64}
CACHE_SIZE = 10_000
Looked = TypeVar("Looked", bound="Principal | None")

Via = Literal["session", "token", "header"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a request acts for, and by what credential."""

    user_id: int
    email: str
    role: str
    via: Via
    credential: str  # the session id, the token id, or the header's email

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def current_principal() -> Principal | None:
    principal: Principal | None = g.get("principal")
    return principal


def unauthenticated(message: str = "Log in, or send an API token.") -> APIError:
    return APIError(401, "UNAUTHENTICATED", message, headers={"WWW-Authenticate": "Bearer"})


class Networks:
    """Where a request came from, believing X-Forwarded-* only from TRUSTED_PROXIES."""

    def __init__(self, trusted: list[str]) -> None:
        self.trusted = [ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip()]

    def wide(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The trusted networks wider than WIDEST_TRUSTED (an IPv4 /24, an IPv6 /64)."""
        return [n for n in self.trusted if n.prefixlen < WIDEST_TRUSTED[n.version]]

    def warn_if_wide(self, trusted_header: bool) -> None:
        """Log, at start, a warning naming each trusted network wider than WIDEST_TRUSTED."""
        for network in self.wide():
            log.warning(
                "TRUSTED_PROXIES has %s (%s addresses): every host in it may set "
                "X-Forwarded-For%s. Trust the proxy's own address, or a network of /%s or "
                'narrower (docs/deploy.md, "Behind an identity proxy").',
                network,
                f"{network.num_addresses:,}",
                " and log in as anyone through AUTH_TRUSTED_HEADER" if trusted_header else "",
                WIDEST_TRUSTED[network.version],
            )

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def client(self) -> str:
        """The client's address: the peer's, or the nearest untrusted one a trusted proxy saw."""
        address = request.remote_addr or ""
        if not self.is_trusted(address):
            return address
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not self.is_trusted(hop):
                return hop
        return address

    def https(self) -> bool:
        if request.scheme == "https":
            return True
        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return forwarded == "https" and self.is_trusted(request.remote_addr or "")


class PrincipalCache:
    """Recently checked credentials, in this process, for CACHE_SECONDS."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._entries) >= CACHE_SIZE:
            self._entries.clear()  # rare; a full cache only costs lookups
        self._entries[key] = (time.monotonic() + CACHE_SECONDS, principal)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_user(self, user_id: int) -> None:
        for key in [k for k, (_, p) in self._entries.items() if p.user_id == user_id]:
            del self._entries[key]


class Authenticator:
    def __init__(
        self,
        db: Database,
        cookies: QuartAuth,
        networks: Networks,
        trusted_header: str | None,
        on_new_header_user: Callable[[str], Awaitable[users.User | None]],
        cache: PrincipalCache,
        *,
        header_pattern: str | None = None,
    ) -> None:
        self.db = db
        self.cookies = cookies
        self.networks = networks
        self.trusted_header = trusted_header
        self.on_new_header_user = on_new_header_user
        # The header's value must look like an account name before anything is looked up or
        # made: an email (the sign-up rule), or AUTH_TRUSTED_HEADER_PATTERN.
        self.header_rule = re.compile(header_pattern or users.EMAIL_PATTERN)
        self.cache = cache
        self._pending: dict[str, asyncio.Task[Any]] = {}

    async def _cached(self, key: str, look_up: Callable[[], Awaitable[Looked]]) -> Looked:
        """The principal cached under `key`, else `look_up()`'s, cached when there is one.

        One lookup per credential at a time: when a cached credential expires, every request in
        flight with it misses at once (50 keep-alive connections of one script: 50 lookups every
        CACHE_SECONDS, each slower for the others); they wait for the first one's answer. The
        lookup runs in a task of its own, so a request that is cancelled (its client left) does
        not cancel it for the others."""
        principal = self.cache.get(key)
        if principal is not None:
            return principal  # type: ignore[return-value]  # what this key's lookup returned
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._keep(key, look_up))
            self._pending[key] = task
            task.add_done_callback(lambda _: self._pending.pop(key, None))
        result: Looked = await asyncio.shield(task)
        return result

    async def _keep(self, key: str, look_up: Callable[[], Awaitable[Looked]]) -> Looked:
        principal = await look_up()
        if principal is not None:
            self.cache.put(key, principal)
        return principal

    async def resolve(self) -> Principal | None:
        """The request's principal; a credential that is present but not valid is a 401."""
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                return await self._token(value.strip())
        if request.path.startswith(V1_PREFIX):
            # OpenAI's API takes a key, and so does ours: a tool names the token it uses (the
            # ledger counts by token, and one revoked stops that tool alone), and a browser's
            # cookie or an identity proxy's header never make /v1 act for whoever is logged in.
            return None
        if self.trusted_header and self.networks.is_trusted(request.remote_addr or ""):
            email = request.headers.get(self.trusted_header)
            if email:
                return await self._header(email)
        auth_id = self.cookies.load_user().auth_id
        if auth_id:
            return await self._session(digest(auth_id))
        return None

    async def _token(self, secret: str) -> Principal:
        if not secret.startswith(TOKEN_PREFIX):
            raise unauthenticated("That is not a quartchat API token (they begin qc_).")
        return await self._cached("t:" + digest(secret), lambda: self._look_up_token(secret))

    async def _look_up_token(self, secret: str) -> Principal:
        async with self.db.read() as connection:
            found = await tokens.owner(connection, secret)
        if found is None or found[1].status != "active":
            raise unauthenticated("This API token was revoked, or its owner cannot log in.")
        token, row = found
        if token.expired(now()):
            assert token.expires_at is not None
            raise unauthenticated(
                f"This API token expired at {token.expires_at.isoformat(timespec='seconds')};"
                " make a new one on the account page."
            )
        principal = Principal(row.user_id, row.email, row.role, "token", str(token.id))
        if token.last_used_at is None or (now() - token.last_used_at).total_seconds() > 600:
            async with self.db.write() as connection:
                await tokens.used(connection, token.id)
        return principal

    async def _session(self, session_id: str) -> Principal | None:
        return await self._cached("s:" + session_id, lambda: self._look_up_session(session_id))

    async def _look_up_session(self, session_id: str) -> Principal | None:
        async with self.db.read() as connection:
            found = await sessions.owner(connection, session_id)
        if found is None or found[1].status != "active":
            return None  # an ended session is no session: the page offers the login form
        session, row = found
        if now() - session.last_seen_at > sessions.TOUCH_AFTER:
            async with self.db.write() as connection:
                await sessions.touch(connection, session_id)
            renew_login()  # and the cookie's lifetime slides with it
        return Principal(row.user_id, row.email, row.role, "session", session_id)

    async def _header(self, email: str) -> Principal:
        email = email.strip()
        if len(email) > users.EMAIL_MAX_LENGTH or not self.header_rule.fullmatch(email):
            raise APIError(
                403,
                "INVALID_IDENTITY_HEADER",
                f"The identity proxy's {self.trusted_header} header does not name a user this "
                "service accepts (an email address, or AUTH_TRUSTED_HEADER_PATTERN).",
            )
        key = "h:" + users.normal_email(email)
        return await self._cached(key, lambda: self._look_up_header(email))

    async def _look_up_header(self, email: str) -> Principal:
        async with self.db.read() as connection:
            user = await users.by_email(connection, email)
        if user is None:
            user = await self.on_new_header_user(email)
        if user is None or user.status != "active":
            raise APIError(
                403,
                "ACCOUNT_NOT_ACTIVE",
                "Your account waits for an administrator, or was disabled.",
            )
        return Principal(user.id, user.email, user.role, "header", user.email)


def login_cookie(token: str) -> None:
    """Have the response set the session cookie (quart-auth signs it)."""
    login_user(AuthUser(token), remember=True)
