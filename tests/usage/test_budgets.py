"""Budgets: requests per minute, tokens per day, cost per month, counted atomically in this
process and in a real redis-server (two `RedisCounts` on two clients stand for two processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from quartchat.errors import APIError, openai_error
from quartchat.usage.budgets import Budgets, LocalCounts, RedisCounts
from quartchat.usage.meter import Price, Record, Request
from quartchat.usage.policies import Effective, Policies

from ..conftest import make_settings
from ..redis_server import RedisServer

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
Make = Callable[[], Budgets]


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
async def budgets(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Budgets over one kind of counts; for Redis each call is another "process" (its own client
    and counts) sharing one redis-server."""
    policies = Policies(None, make_settings())
    if request.param == "local":
        local = LocalCounts()
        yield lambda: Budgets(policies, local, now=lambda: NOON)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    clients: list[Redis] = []
    made: list[RedisCounts] = []

    def make() -> Budgets:
        clients.append(Redis.from_url(server.url))
        made.append(RedisCounts(clients[-1], LocalCounts()))
        return Budgets(policies, made[-1], now=lambda: NOON)

    yield make
    for counts in made:
        await counts.aclose()
    for client in clients:
        await client.aclose()


def ask(user: int = 7, **labels: object) -> Request:
    return Request("api", "r", user, None, **labels)  # type: ignore[arg-type]


async def refusal(budgets: Budgets, request: Request, limits: Effective) -> APIError | None:
    """None if admitted, else the 429 RATE_LIMITED it was refused with."""
    try:
        await budgets.take(request, limits)
    except APIError as error:
        refused = error
    else:
        return None
    assert (refused.status_code, refused.code) == (429, "RATE_LIMITED")
    return refused


def spent(request: Request, tokens: int, cost_micros: int | None = None) -> Record:
    return Record(request, "ok", 200, tokens, 0, False, 1, 2, cost_micros)


async def test_two_hundred_admissions_at_once_admit_exactly_the_requests_per_minute(
    budgets: Make,
) -> None:
    one, two = budgets(), budgets()
    limits = Effective(requests_per_minute=17)
    attempts = [refusal(b, ask(), limits) for _ in range(100) for b in (one, two)]

    refused = await asyncio.gather(*attempts)

    assert sum(r is None for r in refused) == 17
    assert one.reserved() + two.reserved() == 17


async def test_two_hundred_admissions_at_once_never_reserve_past_the_tokens_per_day(
    budgets: Make,
) -> None:
    one, two = budgets(), budgets()
    limits = Effective(tokens_per_day=1000)
    attempts = [refusal(b, ask(max_tokens=100), limits) for _ in range(100) for b in (one, two)]

    refused = await asyncio.gather(*attempts)

    assert sum(r is None for r in refused) == 10


async def test_the_tokens_per_day_refuse_once_spent_until_midnight(budgets: Make) -> None:
    gate = budgets()
    limits = Effective(tokens_per_day=1000)
    first = ask(max_tokens=100)
    await gate.take(first, limits)
    gate.record(spent(first, 950))  # settled: 950 used, not the 100 reserved
    await settled(gate)

    error = await refusal(gate, ask(max_tokens=100), limits)

    assert error is not None
    assert "tokens per day, UTC: 1,000" in error.message
    assert error.details == [{"limit": "tokens_per_day"}]
    assert openai_error(error)[1]["error"]["type"] == "tokens"
    assert error.headers == {"Retry-After": str(12 * 3600)}  # NOON to midnight UTC
    assert await refusal(gate, ask(user=8, max_tokens=100), limits) is None  # another user's


async def settled(gate: Budgets) -> None:
    """Wait until the settlements reached the counts (Redis' are sent in the background)."""
    counts = gate.counts
    if isinstance(counts, RedisCounts):
        await counts.aclose()


async def test_the_cost_per_month_refuses_once_spent_until_the_first(budgets: Make) -> None:
    gate = budgets()
    limits = Effective(cost_per_month_micros=2_000_000)
    first = ask(max_tokens=10, price=Price(1.0, 1.0))
    await gate.take(first, limits)
    gate.record(spent(first, 10, cost_micros=2_000_000))
    await settled(gate)

    error = await refusal(gate, ask(max_tokens=10, price=Price(1.0, 1.0)), limits)

    assert error is not None
    assert "cost per month, UTC: $2.00" in error.message
    assert error.details == [{"limit": "cost_per_month"}]
    to_april = datetime(2026, 4, 1, tzinfo=UTC) - NOON
    assert error.headers == {"Retry-After": str(int(to_april.total_seconds()))}


async def test_a_withdrawn_request_gives_back_what_it_took(budgets: Make) -> None:
    gate = budgets()
    limits = Effective(requests_per_minute=1, tokens_per_day=100)
    first = ask(max_tokens=100)
    await gate.take(first, limits)
    assert await refusal(gate, ask(max_tokens=100), limits) is not None

    gate.withdraw(first)
    await settled(gate)

    assert await refusal(gate, ask(max_tokens=100), limits) is None


async def test_a_refusal_says_when_the_minute_frees_and_admits_then() -> None:
    clock = Clock()
    gate = Budgets(Policies(None, make_settings()), LocalCounts(clock), now=lambda: NOON)
    limits = Effective(requests_per_minute=2)
    await gate.take(ask(), limits)
    clock.now += 10
    await gate.take(ask(), limits)
    clock.now += 20

    error = await refusal(gate, ask(), limits)

    assert error is not None
    assert error.headers == {"Retry-After": "30"}
    assert "requests per minute: 2" in error.message
    assert error.details == [{"limit": "requests_per_minute"}]
    assert openai_error(error)[1]["error"]["type"] == "requests"
    clock.now += 30.001
    assert await refusal(gate, ask(), limits) is None


async def test_redis_away_counts_in_this_process(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url)
    counts = RedisCounts(client, LocalCounts())
    gate = Budgets(Policies(None, make_settings()), counts, now=lambda: NOON)
    limits = Effective(requests_per_minute=1)
    redis_server.stop()

    assert await refusal(gate, ask(), limits) is None
    assert await refusal(gate, ask(), limits) is not None
    await client.aclose()
