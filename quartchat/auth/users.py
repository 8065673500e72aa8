"""Users: one row each. Functions take the connection; none reads the request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import now, users

# Spelled out, not `\s`: Python, pydantic's Rust regex and JSON Schema's ECMAScript regex each
# mean other characters by it, so the schema would promise what the server refuses.
SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
# What an account's email must look like: one @, something either side, no white space. Sign-up,
# invites, admins and the identity proxy's header all go by it.
EMAIL_PATTERN = rf"^[^@{SPACE}]+@[^@{SPACE}]+$"
EMAIL_MAX_LENGTH = 320

ROLES = ("admin", "user")
STATUSES = ("active", "pending", "disabled")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    role: str
    status: str
    created_at: datetime
    password_hash: str | None

    def public(self) -> dict[str, Any]:
        """What the API shows of a user (never the hash)."""
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


COLUMNS = (
    users.c.id,
    users.c.email,
    users.c.role,
    users.c.status,
    users.c.created_at,
    users.c.password_hash,
)


def normal_email(email: str) -> str:
    return email.strip().lower()


async def count(connection: AsyncConnection) -> int:
    return int(await connection.scalar(select(func.count()).select_from(users)) or 0)


async def get(connection: AsyncConnection, user_id: int) -> User | None:
    row = (await connection.execute(select(*COLUMNS).where(users.c.id == user_id))).first()
    return User(*row) if row else None


async def by_email(connection: AsyncConnection, email: str) -> User | None:
    query = select(*COLUMNS).where(users.c.email == normal_email(email))
    row = (await connection.execute(query)).first()
    return User(*row) if row else None


async def create(
    connection: AsyncConnection,
    email: str,
    password_hash: str | None,
    *,
    role: str = "user",
    status: str = "active",
) -> User:
    at = now()
    result = await connection.execute(
        insert(users)
        .values(
            email=normal_email(email),
            password_hash=password_hash,
            role=role,
            status=status,
            created_at=at,
            updated_at=at,
        )
        .returning(*COLUMNS)
    )
    return User(*result.one())


async def page(connection: AsyncConnection, *, after: int = 0, limit: int = 100) -> list[User]:
    query = select(*COLUMNS).where(users.c.id > after).order_by(users.c.id).limit(limit)
    return [User(*row) for row in await connection.execute(query)]


async def change(connection: AsyncConnection, user_id: int, **values: Any) -> User | None:
    """Set `role`, `status` or `password_hash`; the user after, or None if there is none."""
    result = await connection.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(**values, updated_at=now())
        .returning(*COLUMNS)
    )
    row = result.first()
    return User(*row) if row else None


async def active_admins(connection: AsyncConnection) -> int:
    query = (
        select(func.count())
        .select_from(users)
        .where(users.c.role == "admin", users.c.status == "active")
    )
    return int(await connection.scalar(query) or 0)
