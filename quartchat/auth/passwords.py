"""Passwords: argon2id, hashed off the event loop, a bounded number at a time.

Hashing is deliberately slow; on the event loop it would stall every stream. It runs in a thread
(argon2-cffi releases the GIL), one lane each (`parallelism=1`: one core, so the relay keeps the
other), and a semaphore lets only `concurrency` run at once, so a flood of logins queues instead
of taking every core. The parameters are OWASP's first recommendation for argon2id (19 MiB, two
passes, one lane).
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # longer inputs only cost hashing time

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified when the email is unknown, so a login takes as long whether or not the account exists.
_DUMMY = HASHER.hash("not a password: only here to be verified against")


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    return None


class Passwords:
    def __init__(self, concurrency: int = 1) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(HASHER.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with no stored hash it still spends the time."""
        async with self._slots:
            return await asyncio.to_thread(_verify, stored, password)


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
