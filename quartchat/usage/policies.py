"""Who may use which models, and how much: the policies administrators set.

A policy's subject is a role (`role:user`, `role:admin`) or one user (`user:<id>`). Each of its
fields (`models`, `requests_per_minute`, `tokens_per_day`, `cost_per_month_micros`) is either set
or null, "not set here": a user's own row overrides their role's, which overrides the settings'
defaults (DEFAULT_REQUESTS_PER_MINUTE, DEFAULT_TOKENS_PER_DAY, DEFAULT_COST_PER_MONTH; unset: no
limit). A limit of 0 means "no limit", so an administrator can lift a role's limit for one user.
`models` null means every model; a list (even an empty one) names the only models allowed.

A user's effective policy costs one indexed lookup, and nothing when it was read in the last
`CACHE_SECONDS` in this process (keyed by user and role, so a role change applies at once) (as credentials are: auth/principal.py). A change made in this
process drops the whole cache (a role's row changes many users'); other processes see it within
`CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..auth import users
from ..config import Settings
from ..db import Database
from ..db.tables import now, policies
from ..errors import APIError

CACHE_SECONDS = 2.0
CACHE_SIZE = 10_000
SUBJECT = re.compile(r"role:(?:admin|user)|user:[1-9][0-9]{0,17}")
NO_LIMIT = 0
"""A limit of 0 in a policy lifts the limit its role or the defaults set."""
MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Policy:
    """One subject's row: each field None when not set here."""

    subject: str
    models: tuple[str, ...] | None = None
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_month_micros: int | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API shows: the cost in US dollars."""
        return {
            "subject": self.subject,
            "models": list(self.models) if self.models is not None else None,
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_day": self.tokens_per_day,
            "cost_per_month": dollars(self.cost_per_month_micros),
        }


@dataclass(frozen=True, slots=True)
class Effective:
    """What applies to one user: None (or, for models, None) means no limit."""

    models: frozenset[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_month_micros: int | None = None

    @property
    def limited(self) -> bool:
        """Whether any budget or rate applies (models aside)."""
        return bool(self.requests_per_minute or self.tokens_per_day or self.cost_per_month_micros)

    def over(self, policy: Policy) -> Effective:
        """This, with what `policy` sets overriding it."""

        def pick(mine: int | None, theirs: int | None) -> int | None:
            if theirs is None:
                return mine
            return None if theirs == NO_LIMIT else theirs

        return Effective(
            frozenset(policy.models) if policy.models is not None else self.models,
            pick(self.requests_per_minute, policy.requests_per_minute),
            pick(self.tokens_per_day, policy.tokens_per_day),
            pick(self.cost_per_month_micros, policy.cost_per_month_micros),
        )


def dollars(micros: int | None) -> float | None:
    return micros / MICROS if micros is not None else None


def micros(dollars: float | None) -> int | None:
    return round(dollars * MICROS) if dollars is not None else None


def defaults(settings: Settings) -> Effective:
    """The settings' limits, for every user no policy says otherwise of."""
    return Effective(
        None,
        settings.default_requests_per_minute,
        settings.default_tokens_per_day,
        micros(settings.default_cost_per_month),
    )


def check_subject(subject: str) -> str:
    """`subject` if it is `role:user`, `role:admin` or `user:<id>`; else 400 INVALID_REQUEST."""
    if not SUBJECT.fullmatch(subject):
        raise APIError(
            400,
            "INVALID_REQUEST",
            "A policy's subject is role:user, role:admin or user:<id>.",
        )
    return subject


class Policies:
    """The policies table, and each user's effective policy (cached). Without accounts (`db`
    None) there are no rows: everyone gets the settings' defaults."""

    def __init__(self, db: Database | None, settings: Settings) -> None:
        self.db = db
        self.defaults = defaults(settings)
        self._cache: dict[tuple[int, str], tuple[float, Effective]] = {}
        self._reading: dict[tuple[int, str], asyncio.Future[Effective]] = {}

    async def effective(self, user_id: int | None, role: str | None) -> Effective:
        """What applies to the user (None: no accounts)."""
        if self.db is None or user_id is None:
            return self.defaults
        key = (user_id, role or "")
        entry = self._cache.get(key)
        if entry is not None and entry[0] >= time.monotonic():
            return entry[1]
        # One read per user at a time: when an entry expires under load, the requests that
        # find it expired wait for the one read instead of each making their own.
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read(key, user_id, role))
            self._reading[key] = reading
            reading.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(reading)

    async def _read(self, key: tuple[int, str], user_id: int, role: str | None) -> Effective:
        assert self.db is not None
        subjects = [f"user:{user_id}", *([f"role:{role}"] if role else [])]
        async with self.db.read() as connection:
            found = {p.subject: p for p in await _rows(connection, subjects)}
        effective = self.defaults
        for subject in reversed(subjects):  # the role's first, then the user's over it
            if subject in found:
                effective = effective.over(found[subject])
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()  # rare; a full cache only costs lookups
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, effective)
        return effective

    async def all(self) -> list[Policy]:
        """Every policy: roles first, then users by id."""
        if self.db is None:
            return []
        async with self.db.read() as connection:
            rows = await _rows(connection, None)
        return sorted(rows, key=_order)

    async def put(self, policy: Policy) -> Policy:
        """Set `policy` (a new row or a whole replacement); 404 for a user that does not exist."""
        db = self._db()
        check_subject(policy.subject)
        values = {
            "models": list(policy.models) if policy.models is not None else None,
            "requests_per_minute": policy.requests_per_minute,
            "tokens_per_day": policy.tokens_per_day,
            "cost_per_month_micros": policy.cost_per_month_micros,
            "updated_at": now(),
        }
        async with db.write() as connection:
            user = int(policy.subject[5:]) if policy.subject.startswith("user:") else None
            if user is not None and await users.get(connection, user) is None:
                raise APIError(404, "NOT_FOUND", "No such user.")
            changed = await connection.execute(
                update(policies).where(policies.c.subject == policy.subject).values(**values)
            )
            if not changed.rowcount:
                await connection.execute(insert(policies).values(subject=policy.subject, **values))
        self._cache.clear()
        return policy

    async def delete(self, subject: str) -> None:
        """Remove the subject's policy (its fields fall back to the role's or the defaults);
        404 if it has none."""
        db = self._db()
        check_subject(subject)
        async with db.write() as connection:
            gone = await connection.execute(delete(policies).where(policies.c.subject == subject))
        self._cache.clear()
        if not gone.rowcount:
            raise APIError(404, "NOT_FOUND", "No policy for that subject.")

    def _db(self) -> Database:
        if self.db is None:  # the admin routes exist only with accounts
            raise APIError(404, "NOT_FOUND", "There are no accounts here.")
        return self.db


async def _rows(connection: AsyncConnection, subjects: list[str] | None) -> list[Policy]:
    query = select(
        policies.c.subject,
        policies.c.models,
        policies.c.requests_per_minute,
        policies.c.tokens_per_day,
        policies.c.cost_per_month_micros,
    )
    if subjects is not None:
        query = query.where(policies.c.subject.in_(subjects))
    return [
        Policy(
            row.subject,
            tuple(row.models) if row.models is not None else None,
            row.requests_per_minute,
            row.tokens_per_day,
            row.cost_per_month_micros,
        )
        for row in await connection.execute(query)
    ]


def _order(policy: Policy) -> tuple[int, int, str]:
    kind, _, name = policy.subject.partition(":")
    return (0, 0, name) if kind == "role" else (1, int(name), "")
