"""How many upstream requests one user may hold at once.

Every request that holds the upstream for a user -- `/api/chat`, `/api/chat/stream`, a
conversation's turn, later a run and the `/v1` gateway -- takes a `Slot` from the one
`StreamSlots` of the app before the upstream is opened, and gives it back when its response ends
(however it ends). Admission is one step that counts and answers (count first, then act): two
requests at once can never both take the last slot.

`LocalStreamSlots` counts in this process. With APP_WORKERS > 1 (or several hosts) each process
counts on its own, so a user may hold up to the limit per process. `RedisStreamSlots` (REDIS_URL)
keeps one count per user for every process; see its docstring for how a dead process's slots come
back, and what happens while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
import uuid
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import APIError
from ..outages import Outage

log = logging.getLogger("quartchat.limits")

RETRY_AFTER_SECONDS = 5
"""What a refused client is told to wait: a stream's end cannot be known, a few seconds is fair."""

SHARED = "*"
"""The one key when there are no accounts (AUTH_MODE=none with MAX_STREAMS_PER_USER set)."""


def too_many_streams(limit: int) -> APIError:
    return APIError(
        429,
        "TOO_MANY_STREAMS",
        f"You have {limit} replies running already; wait for one to end, or stop one.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Slot(Protocol):
    """One admitted request's place. `release()` gives it back; calling it again does nothing,
    so every path that ends a request (done, error, disconnect, cancellation) may call it."""

    def release(self) -> None: ...


class StreamSlots(Protocol):
    """The per-user count of requests holding the upstream."""

    async def acquire(self, key: int | str) -> Slot:
        """A slot for `key` (a user id, or SHARED), or APIError 429 `TOO_MANY_STREAMS` with
        Retry-After when the key holds its limit already."""
        ...


class Unlimited:
    """No limit (AUTH_MODE=none without MAX_STREAMS_PER_USER, or MAX_STREAMS_PER_USER=0)."""

    async def acquire(self, key: int | str) -> Slot:
        return NO_SLOT


class _NoSlot:
    def release(self) -> None:
        pass


NO_SLOT = _NoSlot()


class _LocalSlot:
    __slots__ = ("_key", "_owner")

    def __init__(self, owner: LocalStreamSlots, key: int | str) -> None:
        self._owner: LocalStreamSlots | None = owner
        self._key = key

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self._key)


class LocalStreamSlots:
    """`StreamSlots` counted in this process: per worker, not per service (see above)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[int | str, int] = {}

    async def acquire(self, key: int | str) -> Slot:
        # No await between the count and the increment: in one event loop this is atomic.
        held = self._held.get(key, 0)
        if held >= self.limit:
            raise too_many_streams(self.limit)
        self._held[key] = held + 1
        return _LocalSlot(self, key)

    def held(self, key: int | str) -> int:
        """How many slots `key` holds now."""
        return self._held.get(key, 0)

    def _give_back(self, key: int | str) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)


SLOT_SECONDS = 30.0
"""A slot in Redis lives this long unless the process holding it refreshes it (every third of it):
the bound on how long a dead process's slots stay taken."""
REDIS_WAIT_SECONDS = 2.0
"""The longest an admission waits on Redis before counting in this process instead."""
RECHECK_SECONDS = 5.0
"""After Redis failed, how long admissions count in this process before asking Redis again (so a
Redis that is away does not cost every request a timeout)."""

# One user's slots: a sorted set of slot ids scored by when each expires (Redis' own clock, so the
# hosts' clocks do not matter). Expired ones are dropped, then the rest are counted and one added,
# in one script: Redis runs it alone, so two processes can never both take the last slot.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The holder's heartbeat: its slots (ARGV[2..]) live another ARGV[1] ms. ZADD without XX puts them
# back if Redis lost them (a restart: nothing is persisted), so the count recovers. (A slot released
# while a refresh naming it is in flight comes back that way too, until it expires: rare, bounded.)
_REFRESH = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class _RedisSlot:
    __slots__ = ("_member", "_name", "_owner")

    def __init__(self, owner: RedisStreamSlots, name: str, member: str) -> None:
        self._owner: RedisStreamSlots | None = owner
        self._name = name
        self._member = member

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self._name, self._member)


class RedisStreamSlots:
    """`StreamSlots` counted in Redis: one count per user, shared by every process and host.

    Each slot is a member of the user's sorted set `quartchat:slots:{key}`, scored by when it
    expires. The process holding slots refreshes them every `ttl / 3` (one script call per user
    with slots, pipelined); a process that dies stops refreshing, and its slots fall out of the
    count within `ttl` (SLOT_SECONDS). A release that cannot reach Redis is forgotten the same way.

    Redis unreachable (or slower than REDIS_WAIT_SECONDS) at admission: the request is counted in
    this process instead (`LocalStreamSlots`, the same limit), with a warning at most once a
    minute, and Redis is asked again after RECHECK_SECONDS. This fails open the way one process
    without Redis is open: a user may hold up to the limit per process while Redis is away, and
    chatting never stops because a cache went down.
    """

    def __init__(
        self,
        limit: int,
        redis: Redis,
        *,
        ttl: float = SLOT_SECONDS,
        recheck: float = RECHECK_SECONDS,
        prefix: str = "quartchat:slots:",
    ) -> None:
        self.limit = limit
        self.beats = 0
        """Heartbeats done (tests wait on it)."""
        self._redis = redis
        self._ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._recheck = recheck
        self._prefix = prefix
        self._me = uuid.uuid4().hex  # this process's slot ids are unique among all processes'
        self._serial = itertools.count()
        self._held: dict[str, set[str]] = {}
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._refresh_script = redis.register_script(_REFRESH)
        self._local = LocalStreamSlots(limit)
        self._redis_down_until = -math.inf
        self._outage = Outage(
            log, "Redis unreachable (%s): stream slots are counted per process meanwhile"
        )
        self._heartbeat: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()

    async def acquire(self, key: int | str) -> Slot:
        if time.monotonic() < self._redis_down_until:
            return await self._local.acquire(key)
        name = f"{self._prefix}{key}"
        member = f"{self._me}:{next(self._serial)}"
        try:
            async with asyncio.timeout(REDIS_WAIT_SECONDS):
                admitted = await self._acquire_script(
                    keys=[name], args=[self.limit, self._ttl_ms, member]
                )
        except (RedisError, TimeoutError) as exc:
            # If the script did run, its slot is refreshed by nobody: it expires within ttl.
            self._unreachable(exc)
            self._redis_down_until = time.monotonic() + self._recheck
            return await self._local.acquire(key)
        if not admitted:
            raise too_many_streams(self.limit)
        self._held.setdefault(name, set()).add(member)
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
        return _RedisSlot(self, name, member)

    def held(self, key: int | str) -> int:
        """How many slots `key` holds in this process (in Redis and, while it is away, here)."""
        return len(self._held.get(f"{self._prefix}{key}", ())) + self._local.held(key)

    async def aclose(self) -> None:
        """Stop refreshing, and let the releases in flight reach Redis."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    def _give_back(self, name: str, member: str) -> None:
        members = self._held.get(name)
        if members is not None:
            members.discard(member)
            if not members:
                del self._held[name]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop any more (shut down): the slot expires within ttl
            return
        task = loop.create_task(self._remove(name, member))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _remove(self, name: str, member: str) -> None:
        try:
            async with asyncio.timeout(REDIS_WAIT_SECONDS):
                await self._redis.zrem(name, member)
        except (RedisError, TimeoutError) as exc:
            self._unreachable(exc)  # no longer refreshed: it expires within ttl

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            held = [(name, sorted(members)) for name, members in self._held.items()]
            try:
                if held:
                    async with asyncio.timeout(self._ttl / 3):
                        async with self._redis.pipeline(transaction=False) as pipe:
                            for name, members in held:
                                await self._refresh_script(
                                    keys=[name], args=[self._ttl_ms, *members], client=pipe
                                )
                            await pipe.execute()
            except (RedisError, TimeoutError) as exc:
                self._unreachable(exc)  # the next beat tries again
            self.beats += 1

    def _unreachable(self, exc: Exception) -> None:
        self._outage.noticed(exc)


def stream_slots(limit: int | None, redis: Redis | None = None) -> StreamSlots:
    """The slots for a limit (None: unlimited): in Redis when there is one, else in this process."""
    if not limit:
        return Unlimited()
    return RedisStreamSlots(limit, redis) if redis is not None else LocalStreamSlots(limit)
