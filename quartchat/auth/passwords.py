"""Passwords: argon2id, hashed off the event loop, a bounded number at a time.

Hashing is deliberately slow; on the event loop it would stall every stream. It runs in a thread
(argon2-cffi releases the GIL), one lane each (`parallelism=1`: one core, so the relay keeps the
other), and a semaphore lets only `concurrency` run at once, so a flood of logins queues instead
of taking every core. The parameters are OWASP's first recommendation for argon2id (19 MiB, two
passes, one lane).

Where the hash shares a core with the event loop (one core, or every core busy), a burst of
logins would still take CPU time from the streams: 20 logins added ~0.5 s to a new stream's first
chunk in bench/accounts_bench.py. So the hashing threads run at the lowest priority (Linux keeps a
nice value per thread): a hash gets the time the loop leaves, and a login waits instead of a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 1024  # longer inputs only cost hashing time

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified when the email is unknown, so a login takes as long whether or not the account exists.
_DUMMY = HASHER.hash("not a password: only here to be verified against")


HASH_NICE = 19


def _lower_priority() -> None:
    # Linux: PRIO_PROCESS with a thread id sets that thread's nice value. Elsewhere there is no
    # per-thread priority, and the hash runs at the normal one.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICE)


# Shared by every Passwords (tests make many apps); each one's semaphore bounds its own use.
# Made at first use, and again in a forked worker: the parent's threads do not exist there, yet an
# executor inherited from it would count them as idle and wait for them forever.
_hashing: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _hashing
    if _hashing is None:
        _hashing = ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="quartchat-hash", initializer=_lower_priority
        )
    return _hashing


def _forget_executor() -> None:
    global _hashing
    _hashing = None


os.register_at_fork(after_in_child=_forget_executor)


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
            return await asyncio.get_running_loop().run_in_executor(
                _executor(), HASHER.hash, password
            )

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches `stored`; with no stored hash it still spends the time."""
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(
                _executor(), _verify, stored, password
            )


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
