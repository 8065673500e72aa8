"""The usage ledger: one row per request (labels and numbers, no text), written in batches,
rolled up per user x model x day, pruned after its retention, nothing lost at shutdown; and the
usage API that reads the roll-ups, each user only their own."""

from __future__ import annotations

import csv
import io
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from quartchat import create_app
from quartchat.db import Database
from quartchat.db.tables import usage_daily, usage_events, usage_names
from quartchat.upstream.registry import Registry
from quartchat.usage import ledger as ledger_module
from quartchat.usage.ledger import Ledger, prune
from quartchat.usage.meter import Price, Record, Request

from ..auth.conftest import accounts_settings
from ..conftest import CHAT, SERVERS, parse_events
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service
from .conftest import user

DAY_MS = 86_400_000


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Rows are written when a test flushes (or at shutdown), not by the clock.
    return {"usage_flush_seconds": 3600.0}


def ledger_of(app: Quart) -> Ledger:
    found: Ledger = app.extensions["ledger"]
    return found


def db_of(app: Quart) -> Database:
    found: Database = app.extensions["db"]
    return found


async def events(db: Database) -> list[dict[str, Any]]:
    """The raw rows, their names spelled out."""
    async with db.read() as connection:
        names = dict((await connection.execute(select(usage_names.c.id, usage_names.c.name))).all())
        rows = (await connection.execute(select(usage_events))).mappings().all()
    spelled = []
    for row in rows:
        spelled.append(
            {
                **row,
                **{
                    key: names[row[f"{key}_id"]]
                    for key in ("route", "upstream", "model", "outcome")
                },
            }
        )
    return spelled


async def daily(db: Database) -> list[dict[str, Any]]:
    async with db.read() as connection:
        query = select(usage_daily).order_by(usage_daily.c.day, usage_daily.c.model_id)
        return [dict(row) for row in (await connection.execute(query)).mappings()]


async def everything_stored(db: Database) -> str:
    """Every value of every usage table as text (for "no prompt or reply text is kept")."""
    async with db.read() as connection:
        values = []
        for table in (usage_events, usage_names, usage_daily):
            values += [repr(tuple(row)) for row in await connection.execute(select(table))]
    return "\n".join(values)


def record(
    at_ms: int,
    *,
    user_id: int | None = 1,
    model: str = "m",
    outcome: str = "ok",
    tokens: tuple[int, int] = (10, 5),
    estimated: bool = False,
    cost_micros: int | None = None,
) -> Record:
    request = Request("api", "r", user_id, None, upstream="default", model=model, at_ms=at_ms)
    return Record(request, outcome, 200, *tokens, estimated, 3, 7, cost_micros)


# -- what a request leaves --------------------------------------------------------------------


async def test_a_chat_request_is_one_row_with_its_labels_and_tokens_and_no_text(
    app: Quart, database: URL, tmp_path: Path
) -> None:
    ann, ann_id = await user(app, "ann@example.com")
    secret = f"secret-{uuid.uuid4().hex}"
    response = await ann.post("/api/chat", json={"messages": [{"role": "user", "content": secret}]})
    assert response.status_code == 200
    assert secret in (await response.get_data(as_text=True))  # the fake echoes it
    assert await ledger_of(app).flush()
    [row] = await events(db_of(app))
    assert (row["route"], row["upstream"], row["outcome"]) == ("api", "default", "ok")
    assert row["model"] == orjson.loads(await response.get_data())["model"]
    assert (row["user_id"], row["token_id"]) == (ann_id, None)
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (5, 2, False)
    assert row["duration_ms"] >= 0
    assert secret not in await everything_stored(db_of(app))
    if database.get_backend_name() == "sqlite":  # not in the file at all: /api/chat keeps none
        files = [tmp_path / "data" / name for name in ("quartchat.db", "quartchat.db-wal")]
        assert not any(secret.encode() in f.read_bytes() for f in files if f.exists())


async def test_a_page_turn_is_one_row_of_the_page_route(app: Quart) -> None:
    ann, ann_id = await user(app, "ann@example.com")
    made = await ann.post("/api/conversations", json={})
    conversation = orjson.loads(await made.get_data())["id"]
    secret = f"secret-{uuid.uuid4().hex}"
    response = await ann.post(
        f"/api/conversations/{conversation}/messages",
        json={"content": secret, "client_id": str(uuid.uuid4())},
    )
    assert parse_events(await response.get_data())[-1][0] == "done"
    assert await ledger_of(app).flush()
    [row] = await events(db_of(app))
    assert (row["route"], row["outcome"], row["user_id"]) == ("page", "ok", ann_id)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert secret not in await everything_stored(db_of(app))


async def test_tokens_the_upstream_does_not_report_are_estimated_and_flagged(
    app: Quart, fake: FakeUpstream
) -> None:
    ann, _ = await user(app, "ann@example.com")
    fake.reply_with(Reply(chunks=completion_chunks(["abcd", "efgh"], usage=False)))
    response = await ann.post("/api/chat/stream", json=CHAT)
    assert parse_events(await response.get_data())[-1][0] == "done"
    assert await ledger_of(app).flush()
    [row] = await events(db_of(app))
    assert row["estimated"] is True
    assert row["completion_tokens"] == 2  # ceil(8 characters / 4)
    [day] = await daily(db_of(app))
    assert day["estimated"] == 1


async def test_a_priced_model_s_cost_is_summed_into_the_day(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, _ = await user(app, "ann@example.com")
    registry: Registry = app.extensions["upstreams"]
    monkeypatch.setattr(registry, "price", lambda model, upstream=None: Price(1.0, 2.0))
    for _ in range(2):
        assert (await ann.post("/api/chat", json=CHAT)).status_code == 200
    assert await ledger_of(app).flush()
    [day] = await daily(db_of(app))
    assert day["requests"] == 2
    assert day["cost_micros"] == 2 * (5 * 1 + 2 * 2)  # 5 prompt, 2 reply tokens each


async def test_a_day_without_a_priced_request_has_no_cost_not_a_zero(app: Quart) -> None:
    ledger = ledger_of(app)
    now = time.time_ns() // 1_000_000
    ledger.record(record(now, model="free"))
    ledger.record(record(now, model="paid", cost_micros=0))
    assert await ledger.flush()
    assert [d["cost_micros"] for d in await daily(db_of(app))] == [None, 0]


# -- batches, roll-ups, retention, shutdown ------------------------------------------------------


async def test_a_flush_writes_its_rows_and_roll_ups_in_one_transaction_per_batch(
    app: Quart,
) -> None:
    ledger, db = ledger_of(app), db_of(app)
    now = time.time_ns() // 1_000_000
    for i in range(ledger_module.FLUSH_MAX):
        ledger.record(record(now, user_id=i % 3 + 1, model=f"m{i % 2}"))
    before = db.writer.transactions
    assert await ledger.flush()
    assert db.writer.transactions - before == 1
    assert len(await events(db)) == ledger_module.FLUSH_MAX
    assert len(await daily(db)) == 6  # 3 users x 2 models, one day
    for _ in range(ledger_module.FLUSH_MAX + 1):
        ledger.record(record(now))
    before = db.writer.transactions
    assert await ledger.flush()
    assert db.writer.transactions - before == 2  # at most FLUSH_MAX rows a transaction


async def test_the_roll_ups_add_up_across_flushes_and_errors_are_counted(app: Quart) -> None:
    ledger, db = ledger_of(app), db_of(app)
    now = time.time_ns() // 1_000_000
    ledger.record(record(now, tokens=(10, 5), cost_micros=7))
    assert await ledger.flush()
    ledger.record(record(now, tokens=(1, 2), outcome="UPSTREAM_ERROR", cost_micros=3))
    ledger.record(record(now, tokens=(0, 0), outcome="disconnected", estimated=True))
    ledger.record(record(now - DAY_MS, tokens=(100, 100)))  # yesterday: a row of its own
    assert await ledger.flush()
    [yesterday, today] = await daily(db)
    assert (yesterday["requests"], yesterday["prompt_tokens"]) == (1, 100)
    assert today["requests"] == 3
    assert (today["errors"], today["estimated"]) == (1, 1)  # a client leaving is no error
    assert (today["prompt_tokens"], today["completion_tokens"]) == (11, 7)
    assert today["cost_micros"] == 10
    assert today["day"] == datetime.fromtimestamp(now / 1000, UTC).date()


async def test_a_failed_flush_keeps_its_rows_for_the_next(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, db = ledger_of(app), db_of(app)
    ledger.record(record(time.time_ns() // 1_000_000))

    async def away(work: Any) -> Any:
        raise ConnectionError("the database is away")

    monkeypatch.setattr(db, "run", away)
    assert not await ledger.flush()
    monkeypatch.undo()
    assert len(ledger) == 1
    assert await ledger.flush()
    assert len(await events(db)) == 1 and len(ledger) == 0


async def test_rows_past_the_buffer_s_bound_drop_the_oldest_with_one_log_line(
    app: Quart, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ledger_module, "BUFFER_MAX", 3)
    ledger = ledger_of(app)
    for at in range(1, 6):
        ledger.record(record(at * 1000))
    assert ledger.dropped == 2
    assert len([r for r in caplog.records if "dropping" in r.getMessage()]) == 1
    assert await ledger.flush()
    assert sorted(row["at"] for row in await events(db_of(app))) == [3000, 4000, 5000]


async def test_retention_deletes_only_raw_rows_older_than_it_and_keeps_the_roll_ups(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "PRUNE_CHUNK", 2)  # several chunks
    ledger, db = ledger_of(app), db_of(app)
    now = time.time_ns() // 1_000_000
    for age_days in (100, 95, 91, 91, 89, 1):  # written oldest first, as they would be
        ledger.record(record(now - age_days * DAY_MS))
    assert await ledger.flush()
    assert await prune(db, 90, now) == 4
    assert sorted((now - row["at"]) // DAY_MS for row in await events(db)) == [1, 89]
    assert sum(day["requests"] for day in await daily(db)) == 6


async def test_what_is_waiting_is_written_when_the_app_stops(
    database: URL, tmp_path: Path, fake: FakeUpstream
) -> None:
    settings = accounts_settings(
        database, tmp_path, openai_api_base=fake.url, usage_flush_seconds=3600.0
    )
    app = create_app(settings)
    async with app.test_app():
        ann, _ = await user(app, "ann@example.com")
        assert (await ann.post("/api/chat", json=CHAT)).status_code == 200
        assert len(ledger_of(app)) == 1
    db = Database.open(database)
    try:
        assert len(await events(db)) == 1
    finally:
        await db.close()


async def test_names_are_interned_once_and_the_same_ids_serve_a_second_ledger(
    app: Quart,
) -> None:
    db = db_of(app)
    first, second = ledger_of(app), Ledger(db, 3600.0)
    now = time.time_ns() // 1_000_000
    first.record(record(now, model="alpha"))
    assert await first.flush()
    second.record(record(now, model="beta"))
    second.record(record(now, model="alpha"))
    assert await second.flush()
    assert sorted(row["model"] for row in await events(db)) == ["alpha", "alpha", "beta"]
    async with db.read() as connection:
        count = await connection.scalar(select(func.count()).select_from(usage_names))
    assert count == len({"api", "default", "ok", "alpha", "beta"})


# -- the usage API ------------------------------------------------------------------------------


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status_code == status, await response.get_data()
    return orjson.loads(await response.get_data())


async def test_my_usage_counts_my_requests_only(app: Quart) -> None:
    ann, _ = await user(app, "ann@example.com")
    eve, _ = await user(app, "eve@example.com")
    for _ in range(2):
        assert (await ann.post("/api/chat", json=CHAT)).status_code == 200
    assert (await eve.post("/api/chat", json=CHAT)).status_code == 200
    assert await ledger_of(app).flush()
    mine = await get_json(ann, "/api/usage")
    today = datetime.now(UTC).date()
    assert mine["month"] == today.strftime("%Y-%m")
    assert mine["from"] == today.replace(day=1).isoformat()
    assert mine["total"] == {
        "requests": 2,
        "errors": 0,
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "cost_usd": None,
        "estimated": 0,
    }
    [model] = mine["by_model"]
    assert model["requests"] == 2
    days = [d["day"] for d in mine["by_day"]]
    assert (days[0], days[-1], len(days)) == (mine["from"], mine["to"], len(set(days)))
    assert sum(d["requests"] for d in mine["by_day"]) == 2
    theirs = await get_json(eve, "/api/usage")
    assert theirs["total"]["requests"] == 1


async def test_my_usage_of_another_month_is_that_month_s(app: Quart) -> None:
    ann, ann_id = await user(app, "ann@example.com")
    ledger = ledger_of(app)
    feb = int(datetime(2024, 2, 29, 23, 59, tzinfo=UTC).timestamp() * 1000)
    ledger.record(record(feb, user_id=ann_id, cost_micros=1_500_000))
    ledger.record(record(feb + 120_000, user_id=ann_id))  # 1 March, UTC
    assert await ledger.flush()
    month = await get_json(ann, "/api/usage?month=2024-02")
    assert (month["from"], month["to"]) == ("2024-02-01", "2024-02-29")
    assert len(month["by_day"]) == 29
    assert month["total"]["requests"] == 1 and month["total"]["cost_usd"] == 1.5
    assert (await get_json(ann, "/api/usage?month=2024-03"))["total"]["requests"] == 1


@pytest.mark.parametrize("month", ["2024-13", "2024-00", "0000-01", "2024-2", "2024-02-01", "x"])
async def test_a_month_that_is_not_yyyy_mm_is_refused(app: Quart, month: str) -> None:
    ann, _ = await user(app, "ann@example.com")
    found = await get_json(ann, f"/api/usage?month={month}", 400)
    assert found["error"]["code"] == "INVALID_REQUEST"


async def test_everyone_s_usage_is_for_admins_only(app: Quart) -> None:
    ann, _ = await user(app, "ann@example.com")
    found = await get_json(ann, "/api/admin/usage", 403)
    assert found["error"]["code"] == "FORBIDDEN"


async def test_everyone_s_usage_by_user_model_and_day(app: Quart) -> None:
    admin, admin_id = await user(app, "admin@example.com", role="admin")
    _, ann_id = await user(app, "ann@example.com")
    ledger = ledger_of(app)
    at = int(datetime(2024, 5, 10, 12, tzinfo=UTC).timestamp() * 1000)
    ledger.record(record(at, user_id=ann_id, model="a"))
    ledger.record(record(at + DAY_MS, user_id=ann_id, model="b"))
    ledger.record(record(at, user_id=admin_id, model="a", cost_micros=250_000))
    ledger.record(record(at - 30 * DAY_MS, user_id=admin_id, model="a"))  # out of range
    assert await ledger.flush()
    query = "/api/admin/usage?from=2024-05-01&to=2024-05-31"
    by_user = await get_json(admin, query + "&group=user")
    assert (by_user["from"], by_user["to"], by_user["group"]) == (
        "2024-05-01",
        "2024-05-31",
        "user",
    )
    assert [(r["key"], r["user_id"], r["email"], r["requests"]) for r in by_user["rows"]] == [
        ("admin@example.com", admin_id, "admin@example.com", 1),
        ("ann@example.com", ann_id, "ann@example.com", 2),
    ]
    assert by_user["total"]["requests"] == 3 and by_user["total"]["cost_usd"] == 0.25
    by_model = await get_json(admin, query + "&group=model")
    assert [(r["key"], r["requests"]) for r in by_model["rows"]] == [("a", 2), ("b", 1)]
    by_day = await get_json(admin, query + "&group=day")
    assert [(r["key"], r["requests"]) for r in by_day["rows"]] == [
        ("2024-05-10", 2),
        ("2024-05-11", 1),
    ]


async def test_everyone_s_usage_as_csv_keeps_formulas_out_of_the_keys(app: Quart) -> None:
    admin, admin_id = await user(app, "admin@example.com", role="admin")
    ledger = ledger_of(app)
    at = int(datetime(2024, 5, 10, tzinfo=UTC).timestamp() * 1000)
    ledger.record(record(at, user_id=admin_id, model='=HYPERLINK("http://evil")'))
    ledger.record(record(at, user_id=admin_id, model="gpt", cost_micros=1))
    assert await ledger.flush()
    response = await admin.get(
        "/api/admin/usage?from=2024-05-10&to=2024-05-10&group=model&format=csv"
    )
    assert response.status_code == 200
    assert response.content_type.startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await response.get_data(as_text=True))))
    assert rows[0] == [
        "key",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "estimated",
    ]
    assert rows[1] == ['\'=HYPERLINK("http://evil")', "1", "0", "10", "5", "15", "", "0"]
    assert rows[2] == ["gpt", "1", "0", "10", "5", "15", "1e-06", "0"]


@pytest.mark.parametrize(
    "query",
    [
        "from=2024-5-1",
        "to=yesterday",
        "to=2024-02-30",
        "group=team",
        "format=xml",
    ],
)
async def test_everyone_s_usage_refuses_a_bad_query(app: Quart, query: str) -> None:
    admin, _ = await user(app, "admin@example.com", role="admin")
    found = await get_json(admin, f"/api/admin/usage?{query}", 400)
    assert found["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.e2e
@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_loses_no_row(fake: FakeUpstream, server: str) -> None:
    # Either server runs the app's shutdown after its connections, and that is what flushes.
    admin = {"email": "admin@example.com", "password": "correct horse battery"}
    env = {
        "SERVER": server,
        "AUTH_MODE": "accounts",
        "ADMIN_EMAIL": admin["email"],
        "ADMIN_PASSWORD": admin["password"],
        "USAGE_FLUSH_SECONDS": "3600",  # only the shutdown's flush can write them
    }
    with Service(fake.url, **env) as service, httpx.Client(base_url=service.url) as client:
        assert service.process is not None
        assert client.post("/api/auth/login", json=admin).status_code == 200
        for _ in range(3):
            assert client.post("/api/chat", json=CHAT).status_code == 200
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(20) == 0
        with sqlite3.connect(service.data_dir / "quartchat.db") as stored:
            [(rows,)] = stored.execute("SELECT count(*) FROM usage_events").fetchall()
            [(requests,)] = stored.execute("SELECT sum(requests) FROM usage_daily").fetchall()
    assert (rows, requests) == (3, 3)


async def test_everyone_s_usage_of_an_empty_range_is_empty(app: Quart) -> None:
    admin, _ = await user(app, "admin@example.com", role="admin")
    ledger_of(app).record(record(int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000)))
    assert await ledger_of(app).flush()
    found = await get_json(admin, "/api/admin/usage?from=2024-05-02&to=2024-05-01")
    assert (found["rows"], found["total"]["requests"]) == ([], 0)
