"""Login sessions, kept on the server: logging out, "log out everywhere", a password change or a
disabled account end them at once, whatever the browser still holds.

The cookie carries a random token (signed by quart-auth); the table holds its SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import now, sessions, users
from .credentials import digest, new_secret

LIFETIME = timedelta(days=30)
TOUCH_AFTER = timedelta(minutes=10)
"""A session's last use is written at most this often: not a write per request."""


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user_id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    user_agent: str
    ip: str

    def public(self, current: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "user_agent": self.user_agent,
            "ip": self.ip,
            "current": self.id == current,
        }


COLUMNS = (
    sessions.c.id,
    sessions.c.user_id,
    sessions.c.created_at,
    sessions.c.last_seen_at,
    sessions.c.expires_at,
    sessions.c.user_agent,
    sessions.c.ip,
)


async def start(connection: AsyncConnection, user_id: int, user_agent: str, ip: str) -> str:
    """A new session for the user; returns the token for the cookie (never stored)."""
    token = new_secret()
    at = now()
    await connection.execute(
        insert(sessions).values(
            id=digest(token),
            user_id=user_id,
            created_at=at,
            last_seen_at=at,
            expires_at=at + LIFETIME,
            user_agent=user_agent[:200],
            ip=ip[:64],
        )
    )
    return token


async def owner(connection: AsyncConnection, session_id: str) -> tuple[Session, Any] | None:
    """The live session with this id and its user's row (id, email, role, status), or None."""
    query = (
        select(*COLUMNS, users.c.email, users.c.role, users.c.status)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.id == session_id, sessions.c.expires_at > now())
    )
    row = (await connection.execute(query)).first()
    if row is None:
        return None
    return Session(*row[:7]), row


async def touch(connection: AsyncConnection, session_id: str) -> None:
    """Slide the session's lifetime forward from now."""
    at = now()
    await connection.execute(
        update(sessions)
        .where(sessions.c.id == session_id)
        .values(last_seen_at=at, expires_at=at + LIFETIME)
    )


async def started_at(connection: AsyncConnection, user_id: int, session_id: str) -> datetime | None:
    """When the user's live session began (its login), or None if there is no such session."""
    query = select(sessions.c.created_at).where(
        sessions.c.id == session_id,
        sessions.c.user_id == user_id,
        sessions.c.expires_at > now(),
    )
    started: datetime | None = await connection.scalar(query)
    return started


async def of_user(connection: AsyncConnection, user_id: int) -> list[Session]:
    query = (
        select(*COLUMNS)
        .where(sessions.c.user_id == user_id, sessions.c.expires_at > now())
        .order_by(sessions.c.last_seen_at.desc())
    )
    return [Session(*row) for row in await connection.execute(query)]


async def end(connection: AsyncConnection, user_id: int, session_id: str) -> bool:
    """End one of the user's sessions; False if the user has no such session."""
    result = await connection.execute(
        delete(sessions).where(sessions.c.id == session_id, sessions.c.user_id == user_id)
    )
    return result.rowcount > 0


async def end_all(connection: AsyncConnection, user_id: int) -> None:
    await connection.execute(delete(sessions).where(sessions.c.user_id == user_id))
