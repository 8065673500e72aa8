"""RedisStreamSlots (REDIS_URL): one count per user for every process, against a real redis-server.

Two `RedisStreamSlots` on two clients stand for two processes; a real child process that is
killed stands for one that dies holding slots.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from subprocess import PIPE, STDOUT

import pytest
from redis.asyncio import Redis

from quartchat.errors import APIError
from quartchat.usage.limits import RedisStreamSlots, Slot, stream_slots

from ..conftest import CHAT, REDIS_PASSWORD, LiveClient, assert_error
from ..fake_upstream import FakeUpstream
from ..redis_server import RedisServer
from .conftest import hanging, streaming

DEADLINE = 15.0
"""The longest a test waits for what it expects (a dead process's slots expire within 1 s here)."""

Clients = Callable[[], Redis]


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[Clients]:
    """A new Redis client per call (one per "process"), all closed at the end."""
    made: list[Redis] = []

    def make() -> Redis:
        made.append(Redis.from_url(redis_url))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


async def admitted(slots: RedisStreamSlots, key: int | str) -> Slot | None:
    """A slot, or None when refused with 429 TOO_MANY_STREAMS."""
    try:
        return await slots.acquire(key)
    except APIError as error:
        refusal = error
    assert (refusal.status_code, refusal.code) == (429, "TOO_MANY_STREAMS")
    return None


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.05)


async def test_fifty_attempts_at_once_from_two_processes_admit_exactly_the_limit(
    clients: Clients,
) -> None:
    one, two = RedisStreamSlots(3, clients()), RedisStreamSlots(3, clients())
    attempts = [admitted(slots, 7) for _ in range(25) for slots in (one, two)]

    results = await asyncio.gather(*attempts)

    assert sum(slot is not None for slot in results) == 3
    assert one.held(7) + two.held(7) == 3
    await one.aclose()
    await two.aclose()


async def test_a_slot_released_in_one_process_is_free_in_another_once(clients: Clients) -> None:
    one, two = RedisStreamSlots(2, clients()), RedisStreamSlots(2, clients())
    first, _ = await one.acquire(7), await one.acquire(7)
    assert await admitted(two, 7) is None
    assert await admitted(two, 8) is not None  # another user is counted apart

    first.release()
    first.release()  # a second release gives back nothing more
    await one.aclose()  # the release has reached Redis

    assert await admitted(two, 7) is not None
    assert await admitted(two, 7) is None
    await two.aclose()


async def test_a_living_process_keeps_its_slots_past_their_expiry_by_refreshing_them(
    clients: Clients,
) -> None:
    holder = RedisStreamSlots(2, clients(), ttl=0.5)
    other = RedisStreamSlots(2, clients(), ttl=0.5)
    await holder.acquire(7)
    await holder.acquire(7)

    beats = holder.beats

    async def past_first_expiry() -> bool:  # four beats of ttl/3: longer than the first ttl
        return holder.beats >= beats + 4

    await eventually(past_first_expiry)

    assert await admitted(other, 7) is None
    await holder.aclose()
    await other.aclose()


HOLDER = """
import asyncio, sys
from redis.asyncio import Redis
from quartchat.usage.limits import RedisStreamSlots

async def main():
    slots = RedisStreamSlots(2, Redis.from_url(sys.argv[1]), ttl=1.0)
    await slots.acquire(7)
    await slots.acquire(7)
    print("held", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_dead_process_slots_come_back_once_its_heartbeat_stops(
    redis_url: str, clients: Clients
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, redis_url, stdout=PIPE, stderr=STDOUT
    )
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = await holder.stdout.readline()
        assert line == b"held\n", line + await holder.stdout.read()
        other = RedisStreamSlots(2, clients())
        assert await admitted(other, 7) is None  # the holder's slots count here too
    finally:
        holder.kill()  # SIGKILL: no release, no goodbye
        await holder.wait()

    async def free() -> bool:
        slot = await admitted(other, 7)
        return slot is not None

    await eventually(free)
    await other.aclose()


async def test_redis_down_counts_in_the_process_warns_once_without_the_password_then_recovers(
    redis_server: RedisServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    slots = RedisStreamSlots(2, clients(), recheck=0)
    watcher = RedisStreamSlots(2, clients())
    redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="quartchat.limits"):
        local = [await admitted(slots, 7) for _ in range(3)]

    assert [slot is not None for slot in local] == [True, True, False]  # the limit, per process
    warnings = [r for r in caplog.records if r.name == "quartchat.limits"]
    assert len(warnings) == 1, warnings
    assert REDIS_PASSWORD not in caplog.text
    assert "Redis unreachable" in warnings[0].getMessage()

    redis_server.start()
    for slot in local:
        if slot is not None:
            slot.release()
    assert await admitted(slots, 7) is not None  # counted in Redis again: others see it
    assert await admitted(watcher, 7) is not None
    assert await admitted(watcher, 7) is None
    await slots.aclose()
    await watcher.aclose()


async def test_stream_slots_count_in_redis_when_there_is_one(clients: Clients) -> None:
    assert isinstance(stream_slots(2, clients()), RedisStreamSlots)
    assert not isinstance(stream_slots(2), RedisStreamSlots)
    assert not isinstance(stream_slots(None, clients()), RedisStreamSlots)


async def test_two_apps_on_one_redis_share_the_stream_limit(
    live: LiveClient, fake: FakeUpstream, redis_url: str
) -> None:
    fake.reply_with(hanging())
    shared = {"max_streams_per_user": 1, "redis_url": redis_url}
    async with live(**shared) as one, live(**shared) as two, streaming(one):
        async with asyncio.timeout(DEADLINE):  # admitted, it would hang on the upstream
            refused = await two.post("/api/chat/stream", json=CHAT)
        assert_error(refused.status_code, await refused.get_data(), 429, "TOO_MANY_STREAMS")
