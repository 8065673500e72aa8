"""API tokens for scripts and other clients: `Authorization: Bearer qc_…`.

Shown once when made; stored as a hash with a short prefix to recognise it by; revocable; expiring
(after `DEFAULT_DAYS` unless the owner chooses otherwise, or never). A token acts for its owner and
is checked against the owner's current role and status on use, so it never carries more rights
than its owner has now. A password change, a password reset and "log out everywhere" revoke them
all (`revoke_all`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import api_tokens, now, users
from .credentials import digest, new_api_token, token_prefix

MAX_PER_USER = 50
DEFAULT_DAYS = 90
MAX_DAYS = 365


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= at

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.user_id,
    api_tokens.c.name,
    api_tokens.c.prefix,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
    api_tokens.c.expires_at,
)


async def create(
    connection: AsyncConnection, user_id: int, name: str, lifetime: timedelta | None
) -> tuple[ApiToken, str]:
    """A new token, valid for `lifetime` (None: until revoked); returns it and its secret, which
    is shown this once and never stored."""
    secret = new_api_token()
    at = now()
    result = await connection.execute(
        insert(api_tokens)
        .values(
            user_id=user_id,
            name=name,
            prefix=token_prefix(secret),
            hash=digest(secret),
            created_at=at,
            expires_at=at + lifetime if lifetime is not None else None,
        )
        .returning(*COLUMNS)
    )
    return ApiToken(*result.one()), secret


async def of_user(connection: AsyncConnection, user_id: int) -> list[ApiToken]:
    """The user's tokens not revoked, expired ones too (so their owner sees why a script stopped)."""
    query = (
        select(*COLUMNS)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .order_by(api_tokens.c.id)
    )
    return [ApiToken(*row) for row in await connection.execute(query)]


async def owner(connection: AsyncConnection, secret: str) -> tuple[ApiToken, Any] | None:
    """The token with this secret, not revoked, and its owner's row, or None. It may have expired:
    the caller says so (a clearer answer than "no such token")."""
    query = (
        select(*COLUMNS, users.c.email, users.c.role, users.c.status)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.hash == digest(secret), api_tokens.c.revoked_at.is_(None))
    )
    row = (await connection.execute(query)).first()
    if row is None:
        return None
    return ApiToken(*row[: len(COLUMNS)]), row


async def used(connection: AsyncConnection, token_id: int) -> None:
    await connection.execute(
        update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=now())
    )


async def revoke(connection: AsyncConnection, user_id: int, token_id: int) -> bool:
    """Revoke one of the user's tokens; False if the user has no such live token."""
    result = await connection.execute(
        update(api_tokens)
        .where(
            api_tokens.c.id == token_id,
            api_tokens.c.user_id == user_id,
            api_tokens.c.revoked_at.is_(None),
        )
        .values(revoked_at=now())
    )
    return result.rowcount > 0


async def revoke_all(connection: AsyncConnection, user_id: int) -> int:
    """Revoke every token of the user; returns how many were not revoked before."""
    result = await connection.execute(
        update(api_tokens)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return result.rowcount
