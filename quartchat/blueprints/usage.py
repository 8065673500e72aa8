"""`/api/usage` (my usage this month) and `/api/admin/usage` (everyone's, for administrators):
requests, tokens and cost from the usage ledger's daily roll-ups (usage/ledger.py).

Days are UTC. A cost is in US dollars, and null when none of the requests counted had a price
(the upstreams config sets prices per model). `estimated` counts the requests whose tokens the
gateway estimated because the upstream reported none.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, Field
from quart import Blueprint, Response, current_app, request
from quart_schema import document_querystring, document_response

from ..auth.accounts import forbidden
from ..db import Database
from ..errors import APIError
from ..openapi import Described, document_errors
from ..usage import report
from ..usage.report import Group
from .auth import principal
from .common import answer

blueprint = Blueprint("usage", __name__, url_prefix="/api")

_MONTH = re.compile(r"([1-9][0-9]{3})-(0[1-9]|1[0-2])")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
CSV_COLUMNS = (
    "key",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "estimated",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class UsageTotals(BaseModel):
    requests: int
    errors: int = Field(description="Requests that ended in an error (not a client leaving)")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None = Field(description="US dollars; null when no model had a price")
    estimated: int = Field(description="Requests whose tokens were estimated, not reported")


class ModelUsage(UsageTotals):
    model: str = Field(description="Empty for requests refused before a model was chosen")


class DayUsage(UsageTotals):
    day: date


class MyUsage(BaseModel):
    """My usage in a month: in all, per model, and per day (every day of the month)."""

    month: str = Field(examples=["2025-06"])
    from_: date = Field(alias="from")
    to: date
    total: UsageTotals
    by_model: list[ModelUsage]
    by_day: list[DayUsage]


class MonthQuery(BaseModel):
    month: str | None = Field(
        None, pattern=r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$", description="UTC; this month by default"
    )


@blueprint.get("/usage")
@document_querystring(MonthQuery)
@document_response(MyUsage)
@document_errors(400, 401)
async def my_usage() -> Response:
    """My usage in a month.

    Requests, tokens and cost in a UTC month (`?month=YYYY-MM`, this month by default), in all,
    per model and per day.
    """
    first, last = _month(request.args.get("month"))
    async with db().read() as connection:
        month = await report.of_user(connection, principal().user_id, first, last)
    return answer(
        MyUsage,
        {
            "month": first.strftime("%Y-%m"),
            "from": first.isoformat(),
            "to": last.isoformat(),
            "total": month.total.public(),
            "by_model": [{"model": m, **t.public()} for m, t in month.by_model],
            "by_day": [{"day": d.isoformat(), **t.public()} for d, t in month.by_day],
        },
    )


class GroupUsage(UsageTotals):
    key: str = Field(description="The user's email (or id), the model, or the day")
    user_id: int | None = Field(None, description="With `group=user`")
    email: str | None = Field(None, description="With `group=user`; null for a deleted user")


class EveryonesUsage(Described):
    """Everyone's usage from one day to another, grouped, and in all; or the groups as CSV."""

    from_: date = Field(alias="from")
    to: date
    group: Literal["user", "model", "day"]
    rows: list[GroupUsage]
    total: UsageTotals

    other_media = {"text/csv": {"schema": {"type": "string"}}}


class RangeQuery(BaseModel):
    from_: date | None = Field(None, alias="from", description="This month's first by default")
    to: date | None = Field(None, description="Included; today (UTC) by default")
    group: Literal["user", "model", "day"] = "user"
    format: Literal["json", "csv"] = "json"


@blueprint.get("/admin/usage")
@document_querystring(RangeQuery)
@document_response(EveryonesUsage)
@document_errors(400, 401, 403)
async def everyones_usage() -> Response:
    """Everyone's usage, grouped.

    Requests, tokens and cost of every user from `from` to `to` (UTC days, both included), per
    user, model or day (`group`); groups without requests are left out (all of them when `to` is
    before `from`). `format=csv` for a spreadsheet. Admins only.
    """
    if not principal().is_admin:
        raise forbidden()
    today = _today()
    first = _day(request.args.get("from"), "from") or today.replace(day=1)
    last = _day(request.args.get("to"), "to") or today
    group = request.args.get("group", "user")
    if group not in ("user", "model", "day"):
        raise APIError(400, "INVALID_REQUEST", "`group` must be user, model or day.")
    kind = request.args.get("format", "json")
    if kind not in ("json", "csv"):
        raise APIError(400, "INVALID_REQUEST", "`format` must be json or csv.")
    async with db().read() as connection:
        total, rows = await report.of_everyone(connection, first, last, cast(Group, group))
    if kind == "csv":
        return _csv(rows, f"usage-{first}-{last}-{group}.csv")
    return answer(
        EveryonesUsage,
        {
            "from": first.isoformat(),
            "to": last.isoformat(),
            "group": group,
            "rows": [_row(row, group) for row in rows],
            "total": total.public(),
        },
    )


def _row(row: report.Grouped, group: str) -> dict[str, Any]:
    if group == "user":
        return {"key": row.key, "user_id": row.user_id, "email": row.email, **row.totals.public()}
    return {"key": row.key, **row.totals.public()}


def _csv(rows: list[report.Grouped], filename: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        numbers = row.totals.public()
        writer.writerow([_cell(row.key), *(_number(numbers[c]) for c in CSV_COLUMNS[1:])])
    response = Response(out.getvalue(), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _cell(text: str) -> str:
    """A key a spreadsheet shows as text, never runs as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _number(value: Any) -> str:
    return "" if value is None else str(value)


def _month(given: str | None) -> tuple[date, date]:
    """The first and last day of `given` (YYYY-MM), or of this UTC month."""
    if given is None:
        first = _today().replace(day=1)
    else:
        match = _MONTH.fullmatch(given)
        if match is None:
            raise APIError(400, "INVALID_REQUEST", "`month` must be YYYY-MM.")
        first = date(int(match[1]), int(match[2]), 1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _day(given: str | None, name: str) -> date | None:
    if given is None:
        return None
    try:
        if _DAY.fullmatch(given) is None:
            raise ValueError
        return date.fromisoformat(given)
    except ValueError:
        raise APIError(400, "INVALID_REQUEST", f"`{name}` must be YYYY-MM-DD.") from None


def _today() -> date:
    return datetime.now(UTC).date()


def db() -> Database:
    database: Database = current_app.extensions["db"]
    return database
