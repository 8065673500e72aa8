"""Invite links: made by an admin (or, under the `invite` policy, by any user), used once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import invites, now
from .credentials import digest, new_secret
from .users import normal_email

LIFETIME = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Invite:
    id: str
    email: str | None
    role: str
    created_by: int | None
    created_at: datetime
    expires_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


COLUMNS = (
    invites.c.id,
    invites.c.email,
    invites.c.role,
    invites.c.created_by,
    invites.c.created_at,
    invites.c.expires_at,
)


async def create(
    connection: AsyncConnection, created_by: int, role: str, email: str | None
) -> tuple[Invite, str]:
    """A new invite; returns it and the secret for its link (shown once, never stored)."""
    secret = new_secret()
    at = now()
    result = await connection.execute(
        insert(invites)
        .values(
            id=digest(secret),
            email=normal_email(email) if email else None,
            role=role,
            created_by=created_by,
            created_at=at,
            expires_at=at + LIFETIME,
        )
        .returning(*COLUMNS)
    )
    return Invite(*result.one()), secret


async def pending(connection: AsyncConnection, created_by: int | None = None) -> list[Invite]:
    """Unused, unexpired invites (only those `created_by` made, when given)."""
    query = select(*COLUMNS).where(invites.c.used_at.is_(None), invites.c.expires_at > now())
    if created_by is not None:
        query = query.where(invites.c.created_by == created_by)
    return [Invite(*row) for row in await connection.execute(query.order_by(invites.c.created_at))]


async def find(connection: AsyncConnection, secret: str) -> Invite | None:
    query = select(*COLUMNS).where(
        invites.c.id == digest(secret), invites.c.used_at.is_(None), invites.c.expires_at > now()
    )
    row = (await connection.execute(query)).first()
    return Invite(*row) if row else None


async def use(connection: AsyncConnection, invite_id: str, user_id: int) -> bool:
    """Mark the invite used by `user_id`; False if someone used it first (or it expired)."""
    result = await connection.execute(
        update(invites)
        .where(invites.c.id == invite_id, invites.c.used_at.is_(None), invites.c.expires_at > now())
        .values(used_at=now(), used_by=user_id)
    )
    return result.rowcount > 0


async def withdraw(connection: AsyncConnection, invite_id: str, created_by: int | None) -> bool:
    """Delete an unused invite (only one `created_by` made, when given)."""
    query = delete(invites).where(invites.c.id == invite_id, invites.c.used_at.is_(None))
    if created_by is not None:
        query = query.where(invites.c.created_by == created_by)
    return (await connection.execute(query)).rowcount > 0
