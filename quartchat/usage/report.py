"""What the usage pages read: the daily roll-ups (`usage_daily`), summed per model, day or user.

Every function reads roll-ups only (never the raw rows, which retention deletes), so a report
of last year is as cheap as one of today. A user's reports take their id; the admins' take none
and say so in their name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import usage_daily, usage_names, users

Group = Literal["user", "model", "day"]

_d = usage_daily.c
_SUMS: list[ColumnElement[Any]] = [
    func.sum(_d.requests).label("requests"),
    func.sum(_d.errors).label("errors"),
    func.sum(_d.prompt_tokens).label("prompt_tokens"),
    func.sum(_d.completion_tokens).label("completion_tokens"),
    func.sum(_d.cost_micros).label("cost_micros"),  # SUM skips nulls: null if none was priced
    func.sum(_d.estimated).label("estimated"),
]


@dataclass(frozen=True, slots=True)
class Totals:
    """Requests and tokens of a user, a model, a day or a whole range."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int | None = None
    estimated: int = 0

    @classmethod
    def of(cls, row: Any) -> Totals:
        """From a row of `_SUMS` (PostgreSQL's SUM of a bigint is a numeric: made int)."""
        cost = row.cost_micros
        return cls(
            int(row.requests or 0),
            int(row.errors or 0),
            int(row.prompt_tokens or 0),
            int(row.completion_tokens or 0),
            None if cost is None else int(cost),
            int(row.estimated or 0),
        )

    def public(self) -> dict[str, Any]:
        """As the API sends it: tokens totalled, the cost in dollars (null: no price known)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": None if self.cost_micros is None else self.cost_micros / 1_000_000,
            "estimated": self.estimated,
        }


@dataclass(frozen=True, slots=True)
class Month:
    """A user's usage over a range of days: in all, per model, per day (every day, zeros too)."""

    total: Totals
    by_model: list[tuple[str, Totals]]
    by_day: list[tuple[date, Totals]]


def _between(first: date, last: date) -> list[ColumnElement[bool]]:
    return [_d.day >= first, _d.day <= last]


async def of_user(connection: AsyncConnection, owner_id: int, first: date, last: date) -> Month:
    """`owner_id`'s usage from `first` to `last` (UTC days, both included)."""
    mine = [_d.user_id == owner_id, *_between(first, last)]
    total = Totals.of((await connection.execute(select(*_SUMS).where(*mine))).one())
    models = await connection.execute(
        select(usage_names.c.name, *_SUMS)
        .join(usage_names, usage_names.c.id == _d.model_id)
        .where(*mine)
        .group_by(usage_names.c.name)
        .order_by(usage_names.c.name)
    )
    days = {
        row.day: Totals.of(row)
        for row in await connection.execute(
            select(_d.day, *_SUMS).where(*mine).group_by(_d.day).order_by(_d.day)
        )
    }
    every_day = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return Month(
        total,
        [(row.name, Totals.of(row)) for row in models],
        [(day, days.get(day, Totals())) for day in every_day],
    )


@dataclass(frozen=True, slots=True)
class Grouped:
    """One row of an administrator's report: its key, and for a user, who."""

    key: str
    totals: Totals
    user_id: int | None = None
    email: str | None = None


async def of_everyone(
    connection: AsyncConnection, first: date, last: date, group: Group
) -> tuple[Totals, list[Grouped]]:
    """Every user's usage from `first` to `last`, in all and per `group` (administrators only:
    the caller checks). Groups with no requests are left out."""
    when = _between(first, last)
    total = Totals.of((await connection.execute(select(*_SUMS).where(*when))).one())
    query: Select[Any]
    if group == "user":
        # An outer join: the usage of a deleted user is still counted, under its id.
        query = (
            select(_d.user_id, users.c.email, *_SUMS)
            .outerjoin(users, users.c.id == _d.user_id)
            .where(*when)
            .group_by(_d.user_id, users.c.email)
            .order_by(_d.user_id)
        )
        rows = [
            Grouped(row.email or str(row.user_id), Totals.of(row), row.user_id, row.email)
            for row in await connection.execute(query)
        ]
    elif group == "model":
        query = (
            select(usage_names.c.name, *_SUMS)
            .join(usage_names, usage_names.c.id == _d.model_id)
            .where(*when)
            .group_by(usage_names.c.name)
            .order_by(usage_names.c.name)
        )
        rows = [Grouped(row.name, Totals.of(row)) for row in await connection.execute(query)]
    else:
        query = select(_d.day, *_SUMS).where(*when).group_by(_d.day).order_by(_d.day)
        rows = [
            Grouped(row.day.isoformat(), Totals.of(row)) for row in await connection.execute(query)
        ]
    return total, rows
