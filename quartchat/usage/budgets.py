"""Budgets and rate limits per user: requests per minute, tokens per day, cost per month.

`Budgets` is a gate of admission (blueprints/admission.py) and a sink of the meter
(usage/meter.py). At admission it checks the user's effective policy (usage/policies.py) and, in
one atomic step, counts the request and reserves what it may spend:

- requests per minute: a sliding window of the last 60 seconds;
- tokens per day (the UTC day): the request's estimate, `ceil(prompt_chars / 4)` plus its
  `max_tokens`, or DEFAULT_COMPLETION_TOKENS when it names none;
- cost per month (the UTC month): the estimate's cost at the model's price (nothing when the model
  has no price, or is not known yet at admission, as a page turn's is).

A request is refused when what is used and reserved already reaches the limit, or when its
reservation would go past it (a reservation is never counted as more than the whole limit, so a
fresh day admits any one request). When the request is over, its record settles the reservation
to what it really used (the upstream's usage, or the meter's estimate) and cost; a request that
never went upstream (`withdraw`) gives back all it took.

Refused: 429 `RATE_LIMITED`, its message naming the limit and its value, `Retry-After` the
seconds until the window frees (the oldest request of the minute leaves it; midnight UTC; the
first of the next month, UTC).

Where the counts live: in this process (`LocalCounts`; one event loop, no await between check
and add), or with REDIS_URL in Redis (`RedisCounts`: one Lua script per admission checks and adds
over the user's keys, so every process and host shares one count; the keys expire with their
window). Redis unreachable: counted in this process meanwhile (as usage/limits.py's stream slots
are), with a warning at most once a minute, and Redis is asked again after RECHECK_SECONDS.

After a restart (or when Redis lost its keys) a count would start empty. So the first time a
user is seen in a window (by this process), the day's tokens and the month's cost are read from the
ledger's roll-ups (`usage_daily`) and the count starts from them. The roll-ups hold what the
ledger had flushed: what was spent in the last USAGE_FLUSH_SECONDS before a crash may be missed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from quart import Quart
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from ..auth.principal import current_principal
from ..config import Settings
from ..db import Database
from ..db.tables import usage_daily
from ..errors import APIError
from ..outages import Outage
from .meter import CHARS_PER_TOKEN, Record, Request
from .policies import Effective, Policies, dollars

log = logging.getLogger("quartchat.limits")

DEFAULT_COMPLETION_TOKENS = 1000
"""What a request that names no `max_tokens` is reserved for its reply, until it is settled."""
MINUTE = 60.0
REDIS_WAIT_SECONDS = 2.0
"""The longest an admission waits on Redis before counting in this process instead."""
RECHECK_SECONDS = 5.0
"""After Redis failed, how long admissions count in this process before asking Redis again."""

ADMITTED, REQUESTS, TOKENS, COST = 0, 1, 2, 3
NO_ACCOUNTS = 0
"""The user id of the ledger's rows when there are no accounts (usage_daily.user_id)."""


@dataclass(slots=True)
class Ask:
    """One admission's question to the counts: the limits (0: none) and what it would take."""

    user: int
    day: date
    member: str  # this request in the minute's window
    requests_per_minute: int
    tokens_per_day: int
    tokens: int
    tokens_seed: int
    cost_per_month: int
    micros: int
    micros_seed: int
    day_left_ms: int = 1  # until the day ends (UTC), then the month (Redis keys expire then)
    month_left_ms: int = 1


@dataclass(slots=True)
class Reservation:
    """What an admitted request took, and where, to settle or give back."""

    counts: Counts
    ask: Ask


class Counts(Protocol):
    """Where the counts live."""

    async def take(self, ask: Ask) -> tuple[int, float]:
        """Check and, if admitted, add: (ADMITTED | REQUESTS | TOKENS | COST, for REQUESTS the
        seconds until the minute's window frees)."""
        ...

    def settle(self, ask: Ask, tokens: int, micros: int, request_back: bool) -> None:
        """Add `tokens` and `micros` (negative: give back) to what `ask` reserved; with
        `request_back` the request leaves the minute's window."""


def month_of(day: date) -> date:
    return day.replace(day=1)


class LocalCounts:
    """The counts in this process: per worker, not per service (without Redis)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._minute: dict[int, deque[tuple[float, str]]] = {}
        self._tokens: dict[date, dict[int, int]] = {}
        self._micros: dict[date, dict[int, int]] = {}

    async def take(self, ask: Ask) -> tuple[int, float]:
        return self.take_now(ask)

    def take_now(self, ask: Ask) -> tuple[int, float]:
        """`take`, synchronously: no await between the check and the add."""
        now = self._clock()
        window = self._minute.get(ask.user)
        if ask.requests_per_minute:
            if window is None:
                window = self._minute[ask.user] = deque()
            while window and window[0][0] <= now - MINUTE:
                window.popleft()
            if len(window) >= ask.requests_per_minute:
                return REQUESTS, window[0][0] + MINUTE - now
        tokens = _window(self._tokens, ask.day)
        micros = _window(self._micros, month_of(ask.day))
        if ask.tokens_per_day:
            used = tokens.setdefault(ask.user, ask.tokens_seed)
            if _over(used, ask.tokens, ask.tokens_per_day):
                return TOKENS, 0.0
        if ask.cost_per_month:
            used = micros.setdefault(ask.user, ask.micros_seed)
            if _over(used, ask.micros, ask.cost_per_month):
                return COST, 0.0
        if window is not None and ask.requests_per_minute:
            window.append((now, ask.member))
        if ask.tokens_per_day:
            tokens[ask.user] += ask.tokens
        if ask.cost_per_month:
            micros[ask.user] += ask.micros
        return ADMITTED, 0.0

    def settle(self, ask: Ask, tokens: int, micros: int, request_back: bool) -> None:
        spent = self._tokens.get(ask.day, {})
        if ask.tokens_per_day and ask.user in spent:  # else its day is over: nothing to settle
            spent[ask.user] += tokens
        cost = self._micros.get(month_of(ask.day), {})
        if ask.cost_per_month and ask.user in cost:
            cost[ask.user] += micros
        window = self._minute.get(ask.user)
        if request_back and window:
            for entry in window:
                if entry[1] == ask.member:
                    window.remove(entry)
                    break


def _window(counts: dict[date, dict[int, int]], start: date) -> dict[int, int]:
    """The counts of the window that starts on `start`; those of earlier windows are dropped."""
    window = counts.get(start)
    if window is None:
        counts.clear()
        window = counts[start] = {}
    return window


def _over(used: int, need: int, limit: int) -> bool:
    return used >= limit or used + min(need, limit) > limit


# KEYS: the user's minute (a sorted set of requests scored by when they came, Redis' own clock),
# the day's tokens, the month's cost. ARGV: requests per minute, this request's member, then
# (limit, need, seed, ttl ms) for tokens and for cost; a limit of 0 is no limit. A count that does
# not exist yet starts from its seed (the ledger's roll-ups). Nothing is added unless all pass.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(oldest[2]) + 60000 - now}
  end
end
for i = 0, 1 do
  local limit = tonumber(ARGV[3 + i * 4])
  if limit > 0 then
    local key = KEYS[2 + i]
    local used = redis.call('GET', key)
    if not used then
      redis.call('SET', key, ARGV[5 + i * 4], 'PX', ARGV[6 + i * 4])
      used = ARGV[5 + i * 4]
    end
    used = tonumber(used)
    local need = math.min(tonumber(ARGV[4 + i * 4]), limit)
    if used >= limit or used + need > limit then
      return {2 + i, 0}
    end
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 60000)
end
for i = 0, 1 do
  if tonumber(ARGV[3 + i * 4]) > 0 then
    redis.call('INCRBY', KEYS[2 + i], ARGV[4 + i * 4])
  end
end
return {0, 0}
"""

# KEYS: the day's tokens, the month's cost, the minute. ARGV: tokens, micros to add (a count that
# expired stays gone), and a member to take out of the minute ('' for none).
_SETTLE = """
for i = 1, 2 do
  if ARGV[i] ~= '0' and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], ARGV[i])
  end
end
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[3])
end
return 1
"""


class RedisCounts:
    """The counts in Redis, shared by every process and host (REDIS_URL); in this process while
    Redis is away (see the module's docstring)."""

    def __init__(
        self,
        redis: Redis,
        local: LocalCounts,
        *,
        recheck: float = RECHECK_SECONDS,
        prefix: str = "quartchat:limits:",
    ) -> None:
        self._redis = redis
        self._local = local
        self._recheck = recheck
        self._prefix = prefix
        self._take_script = redis.register_script(_TAKE)
        self._settle_script = redis.register_script(_SETTLE)
        self._down_until = -math.inf
        self._outage = Outage(
            log, "Redis unreachable (%s): limits are counted per process meanwhile"
        )
        self._pending: set[asyncio.Task[None]] = set()

    def keys(self, ask: Ask) -> list[str]:
        # One hash tag per user: a Redis Cluster keeps a user's keys on one node, as a script needs.
        user = f"{self._prefix}{{{ask.user}}}"
        return [f"{user}:minute", f"{user}:tokens:{ask.day}", f"{user}:cost:{month_of(ask.day)}"]

    async def take(self, ask: Ask) -> tuple[int, float]:
        if time.monotonic() < self._down_until:
            return self._local.take_now(ask)
        args: list[int | str] = [
            ask.requests_per_minute,
            ask.member,
            ask.tokens_per_day,
            ask.tokens,
            ask.tokens_seed,
            ask.day_left_ms + 3_600_000,  # an hour past the day: clocks differ a little
            ask.cost_per_month,
            ask.micros,
            ask.micros_seed,
            ask.month_left_ms + 3_600_000,
        ]
        try:
            async with asyncio.timeout(REDIS_WAIT_SECONDS):
                which, wait_ms = await self._take_script(keys=self.keys(ask), args=args)
        except (RedisError, TimeoutError) as exc:
            # If the script did run, what it added stays until its window ends: bounded.
            self._outage.noticed(exc)
            self._down_until = time.monotonic() + self._recheck
            return self._local.take_now(ask)
        return int(which), int(wait_ms) / 1000

    def settle(self, ask: Ask, tokens: int, micros: int, request_back: bool) -> None:
        minute, day, month = self.keys(ask)
        member = ask.member if request_back and ask.requests_per_minute else ""
        args: list[int | str] = [
            tokens if ask.tokens_per_day else 0,
            micros if ask.cost_per_month else 0,
            member,
        ]
        if args == [0, 0, ""]:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # shut down: what was reserved stays until its window ends
            return
        task = loop.create_task(self._settle(day, month, minute, args))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _settle(self, day: str, month: str, minute: str, args: list[int | str]) -> None:
        try:
            async with asyncio.timeout(REDIS_WAIT_SECONDS):
                await self._settle_script(keys=[day, month, minute], args=args)
        except (RedisError, TimeoutError) as exc:
            self._outage.noticed(exc)  # the reservation stays until its window ends

    async def aclose(self) -> None:
        """Let the settlements in flight reach Redis."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _ends(day: date) -> tuple[datetime, datetime]:
    """When the UTC day `day` ends, and when its month does."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first = month_of(day)
    next_month = (first + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1), datetime(next_month.year, next_month.month, 1, tzinfo=UTC)


def _ms(left: timedelta) -> int:
    return max(1, math.ceil(left.total_seconds() * 1000))


def rate_limited(message: str, seconds: float, limit: str) -> APIError:
    """429 RATE_LIMITED, with Retry-After in whole seconds (at least 1); `details` names the
    limit (`requests_per_minute`, `tokens_per_day`, `cost_per_month`) for programs to read."""
    return APIError(
        429,
        "RATE_LIMITED",
        message,
        headers={"Retry-After": str(max(1, math.ceil(seconds)))},
        details=[{"limit": limit}],
    )


class Budgets:
    """The gate and the sink (see the module's docstring)."""

    def __init__(
        self,
        policies: Policies,
        counts: LocalCounts | RedisCounts,
        db: Database | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policies = policies
        self.counts = counts
        self._db = db
        self._now = now
        self._me = uuid.uuid4().hex
        self._serial = 0
        self._seeds: dict[date, dict[int, tuple[int, int]]] = {}
        # By the Request object (not its id, which a client may repeat): settled once.
        self._reserved: dict[int, tuple[Request, Reservation]] = {}

    async def admit(self, request: Request) -> None:
        """Count the request and reserve its estimate, or raise 429 RATE_LIMITED."""
        principal = current_principal()
        limits = await self.policies.effective(
            request.user_id, principal.role if principal is not None else None
        )
        await self.take(request, limits)

    async def take(self, request: Request, limits: Effective) -> None:
        """`admit` with the user's limits known."""
        if not limits.limited:
            return
        user = request.user_id if request.user_id is not None else NO_ACCOUNTS
        now = self._now()
        today = now.date()
        day_end, month_end = _ends(today)
        prompt = math.ceil(request.prompt_chars / CHARS_PER_TOKEN)
        reply = request.max_tokens or DEFAULT_COMPLETION_TOKENS
        tokens = prompt + reply
        micros = request.price.micros(prompt, reply) if request.price is not None else 0
        seeds = (0, 0)
        if limits.tokens_per_day or limits.cost_per_month_micros:
            seeds = await self._seed(user, today)
        self._serial += 1
        ask = Ask(
            user,
            today,
            f"{self._me}:{self._serial}",
            limits.requests_per_minute or 0,
            limits.tokens_per_day or 0,
            tokens,
            seeds[0],
            limits.cost_per_month_micros or 0,
            micros,
            seeds[1],
            _ms(day_end - now),
            _ms(month_end - now),
        )
        which, wait = await self.counts.take(ask)
        if which != ADMITTED:
            raise self._refusal(which, wait, ask, today)
        request.reserved = tokens if ask.tokens_per_day else 0
        self._reserved[id(request)] = (request, Reservation(self.counts, ask))

    def withdraw(self, request: Request) -> None:
        """Give back all the request took: it never went upstream."""
        held = self._reserved.pop(id(request), None)
        if held is not None:
            ask = held[1].ask
            held[1].counts.settle(ask, -ask.tokens, -ask.micros, True)

    def started(self, request: Request) -> None:
        pass

    def record(self, record: Record) -> None:
        """Settle the reservation to what the request used and cost."""
        held = self._reserved.pop(id(record.request), None)
        if held is None:
            return
        ask = held[1].ask
        spent = record.cost_micros or 0
        held[1].counts.settle(ask, record.total_tokens - ask.tokens, spent - ask.micros, False)

    def reserved(self) -> int:
        """How many requests hold a reservation (tests)."""
        return len(self._reserved)

    async def _seed(self, user: int, today: date) -> tuple[int, int]:
        """The day's tokens and the month's cost so far, from the ledger's roll-ups: read once
        per user and day in this process."""
        seeds = self._seeds.get(today)
        if seeds is None:
            self._seeds.clear()
            seeds = self._seeds[today] = {}
        known = seeds.get(user)
        if known is not None:
            return known
        found = await self._from_ledger(user, today) if self._db is not None else (0, 0)
        return seeds.setdefault(user, found)  # a concurrent first read may have landed first

    async def _from_ledger(self, user: int, today: date) -> tuple[int, int]:
        assert self._db is not None
        day = usage_daily.c
        query = (
            select(
                day.day,
                func.sum(day.prompt_tokens + day.completion_tokens),
                func.sum(day.cost_micros),
            )
            .where(day.user_id == user, day.day >= month_of(today), day.day <= today)
            .group_by(day.day)
        )
        tokens = micros = 0
        async with self._db.read() as connection:
            for on, spent, cost in await connection.execute(query):
                micros += int(cost or 0)
                if on == today:
                    tokens += int(spent or 0)
        return tokens, micros

    def _refusal(self, which: int, wait: float, ask: Ask, today: date) -> APIError:
        day_end, month_end = _ends(today)
        now = self._now()
        if which == REQUESTS:
            return rate_limited(
                f"Rate limit reached (requests per minute: {ask.requests_per_minute}). "
                f"Try again in {max(1, math.ceil(wait))} s.",
                wait,
                "requests_per_minute",
            )
        if which == TOKENS:
            return rate_limited(
                f"Budget reached (tokens per day, UTC: {ask.tokens_per_day:,}): this request "
                f"may take up to {ask.tokens:,} more (its prompt, and max_tokens or "
                f"{DEFAULT_COMPLETION_TOKENS:,}). It renews at midnight UTC.",
                (day_end - now).total_seconds(),
                "tokens_per_day",
            )
        return rate_limited(
            f"Budget reached (cost per month, UTC: ${dollars(ask.cost_per_month):,.2f}). "
            "It renews on the first of the month, UTC.",
            (month_end - now).total_seconds(),
            "cost_per_month",
        )


def install(app: Quart, settings: Settings, db: Database | None, redis: Redis | None) -> Budgets:
    """The app's policies and budgets (a gate and a sink), counted in Redis when there is one."""
    policies = Policies(db, settings)
    local = LocalCounts()
    counts = RedisCounts(redis, local) if redis is not None else local
    budgets = Budgets(policies, counts, db)
    app.extensions["policies"] = policies
    app.extensions["budgets"] = budgets
    app.extensions["gates"] = (*app.extensions.get("gates", ()), budgets)
    app.extensions["sinks"] = (*app.extensions.get("sinks", ()), budgets)
    if isinstance(counts, RedisCounts):

        @app.while_serving
        async def _settlements() -> AsyncGenerator[None, None]:
            yield
            await counts.aclose()

    return budgets
