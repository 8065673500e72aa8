"""RedisLog against a real redis-server: two logs on two clients stand for two processes, the
one that runs a reply (the writer) and one whose readers follow it from Redis."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from quartchat.runs.log import LogUnavailable, chunk_event, end_id
from quartchat.runs.memory import MemoryLog
from quartchat.runs.redis import RedisLog, holder_key, readers_client, stream_key
from quartchat.streaming.sse import PING

from ..conftest import REDIS_PASSWORD
from ..redis_server import RedisServer

DEADLINE = 15.0
WORDS = [f"w{i} " for i in range(30)]
TEXT = "".join(WORDS)


class CountingRedis(Redis):
    """A client that counts its round trips: commands (a script call is one) and pipelines."""

    round_trips = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        CountingRedis.round_trips += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        real = pipe.execute

        async def execute(raise_on_error: bool = True) -> list[Any]:
            CountingRedis.round_trips += 1
            return await real(raise_on_error)

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


Logs = Callable[..., RedisLog]


@pytest.fixture
async def logs(redis_url: str) -> AsyncIterator[Logs]:
    """A new RedisLog per call (one per "process"), each on clients of its own."""
    made: list[tuple[RedisLog, Redis]] = []

    def make(retention: float = 60, **options: Any) -> RedisLog:
        redis = CountingRedis.from_url(redis_url)
        log = RedisLog(
            redis,
            Redis.from_url(redis_url),
            MemoryLog(retention, 1 << 20),
            ping_seconds=options.pop("ping_seconds", 15),
            **options,
        )
        made.append((log, redis))
        return log

    yield make
    for log, redis in made:
        await log.aclose()
        await redis.aclose()


def write(log: RedisLog, run_id: str, words: list[str], *, start: int = 0, last: bool) -> int:
    """Append a chunk event per word (and the end, when `last`); the offset reached."""
    offset = start
    for word in words:
        offset += len(word)
        log.append(run_id, offset, chunk_event(offset, word), False)
    if last:
        log.append(run_id, offset, end_id(offset) + b"event: done\ndata: {}\n\n", True)
    return offset


def text_of(body: bytes) -> str:
    return "".join(
        orjson.loads(block.split("data: ", 1)[1])["delta"]
        for block in body.decode().split("\n\n")
        if "event: chunk" in block
    )


async def read_all(log: RedisLog, run_id: str, after: int) -> bytes:
    async with asyncio.timeout(DEADLINE):
        return b"".join([event async for event in log.follow(run_id, after)])


async def mirrored(redis_url: str, run_id: str, entries: int) -> None:
    """Wait until the run's stream has `entries` entries (the writer's flush is done)."""
    redis = Redis.from_url(redis_url)
    try:
        await eventually(lambda: _has(redis, run_id, entries))
    finally:
        await redis.aclose()


async def _has(redis: Redis, run_id: str, entries: int) -> bool:
    return bool(await redis.xlen(stream_key(run_id)) >= entries)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, "the condition never came true"
        await asyncio.sleep(0.01)


async def test_a_reader_elsewhere_replays_exactly_the_rest_after_any_offset(
    logs: Logs, redis_url: str
) -> None:
    writer, reader = logs(), logs()
    writer.open("r1")
    middle = write(writer, "r1", WORDS[:12], last=False)
    await mirrored(redis_url, "r1", 12)
    cuts = random.Random(17).sample(range(len(TEXT)), 12)  # ids given and not given
    following = [asyncio.ensure_future(read_all(reader, "r1", cut)) for cut in (0, *cuts)]
    await asyncio.sleep(0.05)  # some readers replay, some wait in XREAD BLOCK
    write(writer, "r1", WORDS[12:], start=middle, last=True)
    for cut, done in zip((0, *cuts), following, strict=True):
        body = await done
        assert text_of(body) == TEXT[cut:]
        assert body.endswith(b"event: done\ndata: {}\n\n")
        assert f"id: {len(TEXT)}.end".encode() in body
    for cut in cuts:  # after the end: from the stream alone
        assert text_of(await read_all(reader, "r1", cut)) == TEXT[cut:]


async def test_appends_of_one_wake_up_are_one_round_trip_for_all_runs(
    logs: Logs, redis_url: str
) -> None:
    writer = logs(beat_seconds=60)  # no heartbeat during the test
    writer.open("warm")  # the first flush on a Redis loads the script (NOSCRIPT, SCRIPT LOAD)
    write(writer, "warm", WORDS[:1], last=True)
    await mirrored(redis_url, "warm", 2)
    CountingRedis.round_trips = 0
    for run in range(10):  # as one wake-up of the loop relaying ten replies
        writer.open(f"b{run}")
        write(writer, f"b{run}", WORDS[:5], last=False)
    redis = Redis.from_url(redis_url)
    try:
        await eventually(lambda: _all_there(redis, 10, 5))
        assert CountingRedis.round_trips == 1
        write(writer, "b0", WORDS[5:7], start=len("".join(WORDS[:5])), last=False)
        await eventually(lambda: _all_there(redis, 1, 7))
        assert CountingRedis.round_trips == 2
    finally:
        await redis.aclose()


async def test_an_ended_run_expires_after_the_retention_and_its_holder_goes_at_once(
    logs: Logs, redis_url: str
) -> None:
    writer = logs(retention=30)
    writer.open("e1")
    write(writer, "e1", WORDS[:3], last=True)
    redis = Redis.from_url(redis_url)
    try:
        await eventually(lambda: _ended(redis, "e1"))
        ttl = await redis.pttl(stream_key("e1"))
        assert 0 < ttl <= 30_000
        assert await redis.exists(holder_key("e1")) == 0
    finally:
        await redis.aclose()


async def test_a_stream_is_capped_at_about_max_entries_and_a_reader_before_them_is_told(
    logs: Logs, redis_url: str
) -> None:
    writer, reader = logs(max_entries=50), logs()
    writer.open("m1")
    words = [f"x{i} " for i in range(2000)]
    write(writer, "m1", words, last=True)
    redis = Redis.from_url(redis_url)
    try:
        await eventually(lambda: _ended(redis, "m1"))
        assert await redis.xlen(stream_key("m1")) < 500  # `~`: whole nodes of 100 go
    finally:
        await redis.aclose()
    with pytest.raises(LogUnavailable) as missing:
        await read_all(reader, "m1", 0)
    assert missing.value.offset == 0  # the database gives it from there
    tail = "".join(words)[-20:]
    assert text_of(await read_all(reader, "m1", len("".join(words)) - 20)) == tail


async def test_a_reader_elsewhere_pings_while_the_run_is_quiet(logs: Logs, redis_url: str) -> None:
    writer, reader = logs(), logs(ping_seconds=0.2, block_seconds=0.1)
    writer.open("p1")
    write(writer, "p1", WORDS[:2], last=False)
    await mirrored(redis_url, "p1", 2)
    events = reader.follow("p1", 0)
    async with asyncio.timeout(DEADLINE):
        assert text_of(await anext(events)) == "".join(WORDS[:2])
        assert await anext(events) == PING
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_reader_elsewhere_gets_interrupted_when_the_holder_stops_beating(
    logs: Logs, redis_url: str
) -> None:
    writer = logs(holder_seconds=0.5, beat_seconds=0.1)
    reader = logs(block_seconds=0.1)
    writer.open("d1")
    offset = write(writer, "d1", WORDS[:4], last=False)
    await mirrored(redis_url, "d1", 4)
    events = reader.follow("d1", 0)
    async with asyncio.timeout(DEADLINE):
        assert text_of(await anext(events)) == TEXT[:offset]
        assert writer._flusher is not None
        writer._flusher.cancel()  # as the process dies: no more heartbeats
        end = await anext(events)
    assert end.startswith(end_id(offset)) and b'"REPLY_INTERRUPTED"' in end


async def test_redis_going_away_sends_readers_elsewhere_to_the_database_and_warns_once(
    logs: Logs, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader = logs(), logs(block_seconds=0.2)
    writer.open("g1")
    offset = write(writer, "g1", WORDS[:5], last=False)
    await mirrored(redis_server.url, "g1", 5)
    events = reader.follow("g1", 0)
    async with asyncio.timeout(DEADLINE):
        assert text_of(await anext(events)) == TEXT[:offset]
        redis_server.stop()
        with caplog.at_level(logging.WARNING, "quartchat.runs"):
            with pytest.raises(LogUnavailable) as away:
                await anext(events)
            assert away.value.offset == offset
            more = write(writer, "g1", WORDS[5:10], start=offset, last=False)
            await eventually(lambda: _warned(caplog))
        # The writer's own readers never noticed: the run is in its memory.
        assert text_of(await anext(writer.follow("g1", 0))) == TEXT[:more]
        redis_server.start()  # empty, as a restarted cache
        write(writer, "g1", WORDS[10:], start=more, last=True)
        await eventually(lambda: _ended_here(writer, "g1"))
        # Whatever reached the new Redis, a reader from the start is not given a part as all.
        with pytest.raises(LogUnavailable) as lost:
            await read_all(reader, "g1", 0)
        assert lost.value.offset == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()
    assert REDIS_PASSWORD not in caplog.text and "127.0.0.1" not in caplog.text


async def _all_there(redis: Redis, runs: int, entries: int) -> bool:
    return all([await redis.xlen(stream_key(f"b{run}")) == entries for run in range(runs)])


async def _ended(redis: Redis, run_id: str) -> bool:
    """Its end is in Redis (the holder goes in the same pipeline as the end and its expiry)."""
    return bool(await redis.exists(stream_key(run_id))) and not await redis.exists(
        holder_key(run_id)
    )


async def _ended_here(log: RedisLog, run_id: str) -> bool:
    return run_id not in log._held and not log._pending


async def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    return "Redis unreachable" in caplog.text


async def test_more_readers_elsewhere_than_redis_py_s_default_pool_all_follow_from_redis(
    logs: Logs, redis_url: str
) -> None:
    writer = logs()
    commands = Redis.from_url(redis_url)
    blocking = readers_client(redis_url, 150)
    reader = RedisLog(commands, blocking, MemoryLog(60, 1 << 20), ping_seconds=15)
    try:
        writer.open("crowd")
        middle = write(writer, "crowd", WORDS[:3], last=False)
        await mirrored(redis_url, "crowd", 3)
        following = [asyncio.ensure_future(read_all(reader, "crowd", 0)) for _ in range(120)]
        await asyncio.sleep(0.5)  # every reader replays, then waits in XREAD BLOCK
        write(writer, "crowd", WORDS[3:], start=middle, last=True)
        bodies = await asyncio.gather(*following, return_exceptions=True)
        unavailable = [b for b in bodies if isinstance(b, LogUnavailable)]
        assert unavailable == []  # none sent to the database for want of a connection
        assert all(isinstance(b, bytes) and text_of(b) == TEXT for b in bodies)
    finally:
        await reader.aclose()
        await commands.aclose()
        await blocking.aclose()
