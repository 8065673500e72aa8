"""The first admin: made with the one-time setup token the service prints at its first start,
by `quartchat create-admin`, or from ADMIN_EMAIL and ADMIN_PASSWORD.

Setup is open while there is no active admin, whatever other users exist: a stranger who signed
up first (sign-up is refused until an admin exists, but a database may predate that) must not be
able to end it for ever.

Exactly one caller can claim the token: claiming is a conditional UPDATE of its single row
(`used_at IS NULL`), which the database serialises -- on PostgreSQL the row lock makes a second
claim wait and then find the token used; on SQLite the write transaction holds the lock.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import now, setup_token
from . import users
from .credentials import digest, new_secret


async def issue(connection: AsyncConnection) -> str | None:
    """A fresh setup token if there is no active admin yet (an older one stops working); else
    None."""
    if await users.active_admins(connection):
        await connection.execute(delete(setup_token))
        return None
    secret = new_secret()
    await connection.execute(delete(setup_token))
    await connection.execute(
        insert(setup_token).values(id=1, hash=digest(secret), created_at=now())
    )
    return secret


async def usable(connection: AsyncConnection, secret: str) -> bool:
    """Whether `secret` is the unused setup token and there is no active admin yet: checked before
    the costly password hash, so a wrong token costs a lookup, not a hash."""
    if await users.active_admins(connection):
        return False
    query = select(setup_token.c.id).where(
        setup_token.c.id == 1,
        setup_token.c.hash == digest(secret),
        setup_token.c.used_at.is_(None),
    )
    return (await connection.execute(query)).first() is not None


async def claim(
    connection: AsyncConnection, secret: str, email: str, password_hash: str
) -> users.User | None:
    """Create the first admin if `secret` is the unused setup token and no active admin exists
    yet; None if not. The email must be free (the caller checks, in the same transaction)."""
    if await users.active_admins(connection):
        return None
    result = await connection.execute(
        update(setup_token)
        .where(setup_token.c.id == 1, setup_token.c.hash == digest(secret))
        .where(setup_token.c.used_at.is_(None))
        .values(used_at=now())
    )
    if result.rowcount != 1:
        return None
    return await users.create(connection, email, password_hash, role="admin")
