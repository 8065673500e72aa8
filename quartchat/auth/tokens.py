"""API tokens for scripts and other clients: `Authorization: Bearer qc_…`.

Shown once when made; stored as a hash with a short prefix to recognise it by; revocable. A token
acts for its owner and is checked against the owner's current role and status on use, so it never
carries more rights than its owner has now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import api_tokens, now, users
from .credentials import digest, new_api_token, token_prefix

MAX_PER_USER = 50


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


COLUMNS = (
    api_tokens.c.id,
    api_tokens.c.user_id,
    api_tokens.c.name,
    api_tokens.c.prefix,
    api_tokens.c.created_at,
    api_tokens.c.last_used_at,
)


async def create(connection: AsyncConnection, user_id: int, name: str) -> tuple[ApiToken, str]:
    """A new token; returns it and its secret, which is shown this once and never stored."""
    secret = new_api_token()
    result = await connection.execute(
        insert(api_tokens)
        .values(
            user_id=user_id,
            name=name,
            prefix=token_prefix(secret),
            hash=digest(secret),
            created_at=now(),
        )
        .returning(*COLUMNS)
    )
    return ApiToken(*result.one()), secret


async def of_user(connection: AsyncConnection, user_id: int) -> list[ApiToken]:
    query = (
        select(*COLUMNS)
        .where(api_tokens.c.user_id == user_id, api_tokens.c.revoked_at.is_(None))
        .order_by(api_tokens.c.id)
    )
    return [ApiToken(*row) for row in await connection.execute(query)]


async def owner(connection: AsyncConnection, secret: str) -> tuple[ApiToken, Any] | None:
    """The live token with this secret and its owner's row, or None."""
    query = (
        select(*COLUMNS, users.c.email, users.c.role, users.c.status)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.hash == digest(secret), api_tokens.c.revoked_at.is_(None))
    )
    row = (await connection.execute(query)).first()
    if row is None:
        return None
    return ApiToken(*row[:6]), row


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
