"""What people do with accounts: log in, sign up, accept invites, manage their sessions and
tokens, and what admins do with users. One method per action; each maps its own failures to
`APIError`s and keeps the principal cache honest.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from ..config import Settings
from ..db import Database
from ..db.tables import now
from ..errors import APIError
from . import invites, limits, sessions, setup, tokens, users
from .devices import Device
from .passwords import Passwords, password_problem
from .principal import Principal, PrincipalCache

log = logging.getLogger("quartchat.auth")

LOGIN_WINDOW = timedelta(minutes=1)
FRESH_LOGIN = timedelta(minutes=10)
"""A session this young may make an API token without giving the password again."""
# One message for a wrong password and an unknown email, so a login never tells which.
BAD_LOGIN = "The email or the password is not right."


def not_found(what: str = "There is no such thing here.") -> APIError:
    return APIError(404, "NOT_FOUND", what)


def forbidden(message: str = "Only an administrator may do this.") -> APIError:
    return APIError(403, "FORBIDDEN", message)


def check_password(password: str) -> None:
    problem = password_problem(password)
    if problem:
        raise APIError(400, "WEAK_PASSWORD", problem)


class Accounts:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        passwords: Passwords,
        cache: PrincipalCache,
        counter: limits.Counter | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.passwords = passwords
        self.cache = cache
        self.counter = counter or limits.DatabaseCounter(db)

    # -- logging in ------------------------------------------------------------------------------

    async def login(
        self, email: str, password: str, ip: str, user_agent: str, device: Device | None = None
    ) -> tuple[str, Device]:
        """Check the password, rate-limited; a new session's token, and the browser's device.

        The attempt is counted before the password is checked (one atomic increment per key), so
        N guesses at once cannot all slip under the limit. A browser that logged in to this
        account before (`device`, from its signed cookie) is counted under its own key only, so
        guessing from elsewhere never locks the owner out of it; any other attempt is counted
        per address and per account."""
        async with self.db.read() as connection:
            user = await users.by_email(connection, email)
        known = device is not None and user is not None and device.user_id == user.id
        if known:
            assert device is not None
            keys: tuple[str, ...] = (f"login-device:{device.id}",)
        else:
            keys = login_keys(email, ip)
        await self._count_attempt(keys, "login attempts")
        # The hash is checked whether or not the account exists: the same time either way.
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if not ok or user is None:
            raise APIError(401, "INVALID_CREDENTIALS", BAD_LOGIN)
        self._require_active(user)
        await _forgive(self.counter, keys)
        async with self.db.write() as connection:
            token = await sessions.start(connection, user.id, user_agent, ip)
        return token, device if known and device is not None else Device.new(user.id)

    async def _count_attempt(self, keys: tuple[str, ...], what: str) -> None:
        """Count one attempt under each key, in order, before any costly work; 429 with
        Retry-After at the first key over `LOGIN_ATTEMPTS_PER_MINUTE` (the later keys are then
        not counted: a flood from one address does not also fill the account's bucket)."""
        limit = self.settings.login_attempts_per_minute
        wait = await self.counter.attempt(keys, limit, LOGIN_WINDOW)
        if wait is not None:  # the counts made so far stay made
            raise APIError(
                429,
                "TOO_MANY_ATTEMPTS",
                f"Too many {what}; try again in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )

    async def _password_again(self, user_id: int, password: str, ip: str) -> users.User | None:
        """The user, if `password` is theirs; None if not. A logged-in caller's password check
        (a password change, making a token) is counted with the logins, per account and per
        address, before it is made: a stolen cookie is no way to guess faster."""
        async with self.db.read() as connection:
            user = await users.get(connection, user_id)
        keys = login_keys(user.email if user else str(user_id), ip)
        await self._count_attempt(keys, "password attempts")
        if user is None or not await self.passwords.verify(user.password_hash, password):
            return None
        await _forgive(self.counter, keys)
        return user

    @staticmethod
    def _require_active(user: users.User) -> None:
        if user.status == "pending":
            raise APIError(403, "ACCOUNT_PENDING", "An administrator has yet to approve you.")
        if user.status != "active":
            raise APIError(403, "ACCOUNT_DISABLED", "This account was disabled.")

    async def logout(self, principal: Principal) -> None:
        if principal.via == "session":
            async with self.db.write() as connection:
                await sessions.end(connection, principal.user_id, principal.credential)
            self.cache.forget("s:" + principal.credential)

    async def logout_everywhere(self, principal: Principal, revoke_tokens: bool) -> int:
        """End every session of the user and, if asked, revoke their API tokens; how many."""
        async with self.db.write() as connection:
            await sessions.end_all(connection, principal.user_id)
            revoked = await tokens.revoke_all(connection, principal.user_id) if revoke_tokens else 0
        self.cache.forget_user(principal.user_id)
        return revoked

    # -- the first admin, sign-up, invites --------------------------------------------------------

    async def setup_state(self) -> dict[str, Any]:
        async with self.db.read() as connection:
            needed = await users.active_admins(connection) == 0
        return {"setup_required": needed, "signup": self.settings.signup_policy}

    async def set_up(self, secret: str, email: str, password: str, ip: str, user_agent: str) -> str:
        """The first admin, with the setup token; counted per address like a login, and the
        token and the email are checked before the password is hashed."""
        check_password(password)
        key = f"setup-ip:{ip}"
        await self._count_attempt((key,), "setup attempts")
        async with self.db.read() as connection:
            if not await setup.usable(connection, secret):
                raise setup_refused()
            await self._email_free(connection, email)
        password_hash = await self.passwords.hash(password)
        async with self.db.write() as connection:
            await self._email_free(connection, email)
            admin = await setup.claim(connection, secret, email, password_hash)
            if admin is None:
                raise setup_refused()
            log.info("first admin created (user %s)", admin.id)
            token = await sessions.start(connection, admin.id, user_agent, ip)
        await self.counter.forgive(refunded=(key,))
        return token

    async def sign_up(self, email: str, password: str, ip: str, user_agent: str) -> str | None:
        """Open and approval policies only, once an admin exists; the new session's token, or
        None if it must wait."""
        policy = self.settings.signup_policy
        if policy not in ("open", "approval"):
            raise APIError(403, "SIGNUP_CLOSED", "Accounts are made by an administrator here.")
        check_password(password)
        async with self.db.read() as connection:
            await self._require_admin_exists(connection)
            await self._email_free(connection, email)
        password_hash = await self.passwords.hash(password)
        status = "active" if policy == "open" else "pending"
        async with self.db.write() as connection:
            user = await self._create(connection, email, password_hash, "user", status)
            if status != "active":
                return None
            return await sessions.start(connection, user.id, user_agent, ip)

    @staticmethod
    async def _require_admin_exists(connection: Any) -> None:
        # Until the operator has claimed setup, nobody else may make an account: the first
        # account made must be the admin's (issue 16, item 11).
        if not await users.active_admins(connection):
            raise APIError(
                403,
                "SETUP_PENDING",
                "This service is not set up yet: accounts open once its administrator exists.",
            )

    @staticmethod
    async def _email_free(connection: Any, email: str) -> None:
        if await users.by_email(connection, email) is not None:
            raise APIError(409, "EMAIL_TAKEN", "There is an account with this email already.")

    async def _create(
        self, connection: Any, email: str, password_hash: str | None, role: str, status: str
    ) -> users.User:
        await self._email_free(connection, email)
        return await users.create(connection, email, password_hash, role=role, status=status)

    async def invite(self, principal: Principal, role: str, email: str | None) -> dict[str, Any]:
        if not principal.is_admin and (self.settings.signup_policy != "invite" or role != "user"):
            raise forbidden("Only an administrator may invite people here.")
        async with self.db.write() as connection:
            invite, secret = await invites.create(connection, principal.user_id, role, email)
        return {**invite.public(), "token": secret}

    async def invites(self, principal: Principal) -> list[dict[str, Any]]:
        mine = None if principal.is_admin else principal.user_id
        async with self.db.read() as connection:
            return [i.public() for i in await invites.pending(connection, mine)]

    async def withdraw_invite(self, principal: Principal, invite_id: str) -> None:
        mine = None if principal.is_admin else principal.user_id
        async with self.db.write() as connection:
            if not await invites.withdraw(connection, invite_id, mine):
                raise not_found("There is no such invite.")

    async def invitation(self, secret: str) -> dict[str, Any]:
        """What the invite page shows before anyone accepts: the fixed email, if any."""
        async with self.db.read() as connection:
            invite = await invites.find(connection, secret)
        if invite is None:
            raise bad_invite()
        return {"email": invite.email, "role": invite.role}

    async def accept_invite(
        self, secret: str, email: str | None, password: str, ip: str, user_agent: str
    ) -> str:
        """Make the invited account and log it in; counted per address like a login, and the
        invite and the email are checked before the password is hashed."""
        check_password(password)
        key = f"invite-ip:{ip}"
        await self._count_attempt((key,), "invite attempts")
        async with self.db.read() as connection:
            invite = await invites.find(connection, secret)
            if invite is None:
                raise bad_invite()
            address = invite.email or email
            if not address:
                raise APIError(400, "INVALID_REQUEST", "Give the email to log in with.")
            await self._email_free(connection, address)
        password_hash = await self.passwords.hash(password)
        async with self.db.write() as connection:
            invite = await invites.find(connection, secret)  # again: it may be used meanwhile
            if invite is None:
                raise bad_invite()
            user = await self._create(connection, address, password_hash, invite.role, "active")
            if not await invites.use(connection, invite.id, user.id):
                raise bad_invite()
            token = await sessions.start(connection, user.id, user_agent, ip)
        await self.counter.forgive(refunded=(key,))
        return token

    async def user_from_header(self, email: str) -> users.User | None:
        """A user an identity proxy vouches for, seen for the first time, per the policy (and,
        as any sign-up, only once an admin exists)."""
        policy = self.settings.signup_policy
        if policy not in ("open", "approval"):
            return None
        async with self.db.write() as connection:
            existing = await users.by_email(connection, email)
            if existing is not None:
                return existing
            await self._require_admin_exists(connection)
            status = "active" if policy == "open" else "pending"
            return await users.create(connection, email, None, status=status)

    # -- my account --------------------------------------------------------------------------------

    async def me(self, principal: Principal) -> dict[str, Any]:
        async with self.db.read() as connection:
            user = await users.get(connection, principal.user_id)
        if user is None:
            raise not_found()
        return {**user.public(), "via": principal.via}

    async def change_password(
        self, principal: Principal, current: str, new: str, ip: str, user_agent: str
    ) -> tuple[str | None, int]:
        """Every session ends and every API token is revoked (whoever learnt the old password
        may have made one); the caller's own browser gets a new session. Returns its token (if
        the caller is a session) and how many API tokens were revoked."""
        check_password(new)
        user = await self._password_again(principal.user_id, current, ip)
        if user is None:
            raise APIError(401, "INVALID_CREDENTIALS", "The current password is not right.")
        password_hash = await self.passwords.hash(new)
        async with self.db.write() as connection:
            await users.change(connection, user.id, password_hash=password_hash)
            await sessions.end_all(connection, user.id)
            revoked = await tokens.revoke_all(connection, user.id)
            token = None
            if principal.via == "session":
                token = await sessions.start(connection, user.id, user_agent, ip)
        self.cache.forget_user(user.id)
        return token, revoked

    async def sessions(self, principal: Principal) -> list[dict[str, Any]]:
        current = principal.credential if principal.via == "session" else None
        async with self.db.read() as connection:
            return [
                s.public(current) for s in await sessions.of_user(connection, principal.user_id)
            ]

    async def end_session(self, principal: Principal, session_id: str) -> None:
        async with self.db.write() as connection:
            if not await sessions.end(connection, principal.user_id, session_id):
                raise not_found("There is no such session.")
        self.cache.forget("s:" + session_id)

    async def tokens(self, principal: Principal) -> list[dict[str, Any]]:
        async with self.db.read() as connection:
            return [t.public() for t in await tokens.of_user(connection, principal.user_id)]

    async def create_token(
        self,
        principal: Principal,
        name: str,
        days: int | None,
        password: str | None,
        ip: str,
    ) -> dict[str, Any]:
        """A new API token valid for `days` (None: until revoked), its secret shown this once.

        Only a logged-in browser makes one, never a token (a leaked token would make itself
        immortal) nor the identity proxy's header (a forged header would walk away with a
        credential that outlives the proxy). The password is asked again, unless the session
        began less than FRESH_LOGIN ago: a stolen cookie alone makes no token.
        """
        if principal.via != "session":
            raise APIError(
                403,
                "SESSION_REQUIRED",
                "API tokens are made from a browser logged in with a password, not with an API"
                " token or through an identity proxy.",
            )
        if password is not None:
            if await self._password_again(principal.user_id, password, ip) is None:
                raise APIError(401, "INVALID_CREDENTIALS", "The password is not right.")
        else:
            async with self.db.read() as connection:
                started = await sessions.started_at(
                    connection, principal.user_id, principal.credential
                )
            if started is None or now() - started >= FRESH_LOGIN:
                raise APIError(
                    403,
                    "PASSWORD_REQUIRED",
                    "Give your password to make an API token (it is not asked in the first"
                    " 10 minutes after logging in).",
                )
        lifetime = timedelta(days=days) if days is not None else None
        async with self.db.write() as connection:
            if len(await tokens.of_user(connection, principal.user_id)) >= tokens.MAX_PER_USER:
                raise APIError(409, "TOO_MANY_TOKENS", "Revoke a token before making another.")
            token, secret = await tokens.create(connection, principal.user_id, name, lifetime)
        return {**token.public(), "token": secret}

    async def revoke_token(self, principal: Principal, token_id: int) -> None:
        async with self.db.write() as connection:
            if not await tokens.revoke(connection, principal.user_id, token_id):
                raise not_found("There is no such token.")
        self.cache.forget_user(principal.user_id)

    # -- administration ----------------------------------------------------------------------------

    async def user_tokens(self, principal: Principal, user_id: int) -> list[dict[str, Any]]:
        """A user's API tokens (not revoked), for an admin."""
        self._admin(principal)
        async with self.db.read() as connection:
            if await users.get(connection, user_id) is None:
                raise not_found("There is no such user.")
            return [t.public() for t in await tokens.of_user(connection, user_id)]

    async def revoke_user_token(self, principal: Principal, user_id: int, token_id: int) -> None:
        """Revoke one of a user's API tokens, for an admin; another user's token is not found."""
        self._admin(principal)
        async with self.db.write() as connection:
            if not await tokens.revoke(connection, user_id, token_id):
                raise not_found("This user has no such token.")
        self.cache.forget_user(user_id)

    async def list_users(self, principal: Principal, after: int) -> list[dict[str, Any]]:
        self._admin(principal)
        async with self.db.read() as connection:
            return [u.public() for u in await users.page(connection, after=after)]

    async def create_user(
        self, principal: Principal, email: str, password: str, role: str
    ) -> dict[str, Any]:
        self._admin(principal)
        check_password(password)
        password_hash = await self.passwords.hash(password)
        async with self.db.write() as connection:
            user = await self._create(connection, email, password_hash, role, "active")
        return user.public()

    async def change_user(
        self,
        principal: Principal,
        user_id: int,
        *,
        status: str | None = None,
        role: str | None = None,
        password: str | None = None,
        revoke_tokens: bool = True,
    ) -> dict[str, Any]:
        """Enable, disable or approve; change the role; reset the password (ends its sessions
        and, unless `revoke_tokens` is false, revokes its API tokens). The user, and how many
        tokens were revoked (`revoked_tokens`)."""
        self._admin(principal)
        values: dict[str, Any] = {}
        if status is not None:
            values["status"] = status
        if role is not None:
            values["role"] = role
        if password is not None:
            check_password(password)
            values["password_hash"] = await self.passwords.hash(password)
        async with self.db.write() as connection:
            before = await users.get(connection, user_id)
            if before is None:
                raise not_found("There is no such user.")
            stays_admin = values.get("role", before.role) == "admin" and (
                values.get("status", before.status) == "active"
            )
            was_admin = before.role == "admin" and before.status == "active"
            if was_admin and not stays_admin and await users.active_admins(connection) <= 1:
                raise APIError(409, "LAST_ADMIN", "Keep at least one active administrator.")
            after = await users.change(connection, user_id, **values)
            if "password_hash" in values or values.get("status", "active") != "active":
                await sessions.end_all(connection, user_id)
            revoked = 0
            if "password_hash" in values and revoke_tokens:
                revoked = await tokens.revoke_all(connection, user_id)
        self.cache.forget_user(user_id)
        assert after is not None
        return {**after.public(), "revoked_tokens": revoked}

    @staticmethod
    def _admin(principal: Principal) -> None:
        if not principal.is_admin:
            raise forbidden()

    # -- at start ----------------------------------------------------------------------------------

    async def first_admin_from_settings(self) -> bool:
        """ADMIN_EMAIL and ADMIN_PASSWORD make the first admin, if there is no active admin yet."""
        email, password = self.settings.admin_email, self.settings.admin_password
        if not email or password is None:
            return False
        check_password(password.get_secret_value())
        password_hash = await self.passwords.hash(password.get_secret_value())
        async with self.db.write() as connection:
            if await users.active_admins(connection):
                return False
            if await users.by_email(connection, email) is not None:
                # Someone else's account, maybe: never hand it admin rights from the environment
                # (`quartchat create-admin` does that, knowingly).
                log.warning(
                    "ADMIN_EMAIL names an existing account that is not an admin: not changed; "
                    "use `quartchat create-admin` or the setup link"
                )
                return False
            await users.create(connection, email, password_hash, role="admin")
        log.info("first admin created from ADMIN_EMAIL")
        return True


def setup_refused() -> APIError:
    return APIError(
        403, "SETUP_REFUSED", "This setup link is not valid, or the admin account exists already."
    )


def login_keys(email: str, ip: str) -> tuple[str, str]:
    """The rate-limit keys of a password check: per address, per account."""
    return f"login-ip:{ip}", f"login-email:{users.normal_email(email)}"


async def _forgive(counter: limits.Counter, keys: tuple[str, ...]) -> None:
    """The right password: the browser's and the account's counts start afresh; the address only
    gets back the attempt that succeeded (others behind it may be guessing)."""
    by_address = tuple(key for key in keys if key.startswith("login-ip:"))
    await counter.forgive(
        refunded=by_address, cleared=tuple(key for key in keys if key not in by_address)
    )


def bad_invite() -> APIError:
    return APIError(
        404, "INVALID_INVITE", "This invite link is not valid: used, expired or withdrawn."
    )
