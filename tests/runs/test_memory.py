"""The in-memory event log: replay from any id, live readers, and what it keeps for how long."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from quartchat.runs.log import chunk_event, end_id, resume_point
from quartchat.runs.memory import MemoryLog
from quartchat.streaming.sse import PING, encode

PIECES = ["Hel", "lo, ", "wörld 🌍", "!", " and more"]


def write(log: MemoryLog, run_id: str, pieces: list[str] = PIECES, end: bool = True) -> list[int]:
    """Append `pieces` as chunk events (and the end); the chunk ids."""
    log.open(run_id)
    offset, ids = 0, []
    for piece in pieces:
        offset += len(piece)
        ids.append(offset)
        log.append(run_id, offset, chunk_event(offset, piece), False)
    if end:
        log.append(run_id, offset, end_id(offset) + encode("done", {}), True)
    return ids


async def collect(events: AsyncIterator[bytes]) -> bytes:
    return b"".join([event async for event in events])


def text_of(raw: bytes) -> str:
    import orjson

    out = ""
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: ") and "event: chunk" in block:
                out += orjson.loads(line[6:])["delta"]
    return out


async def test_replay_after_any_offset_gives_exactly_the_rest() -> None:
    log = MemoryLog(retention_seconds=60, max_bytes=1 << 20)
    write(log, "r")
    whole = "".join(PIECES)
    for after in range(len(whole) + 1):  # every id we give, and every offset between them
        rest = await collect(log.follow("r", after))
        assert text_of(rest) == whole[after:], after
        assert rest.endswith(end_id(len(whole)) + encode("done", {}))


async def test_a_live_reader_gets_each_event_once_and_pings_while_quiet() -> None:
    log = MemoryLog(retention_seconds=60, max_bytes=1 << 20)
    log.open("r")
    got: list[bytes] = []

    async def read() -> None:
        async for event in log.follow("r", 0):
            got.append(event)

    reader = asyncio.ensure_future(read())
    leaver = asyncio.ensure_future(collect(log.follow("r", 0)))
    await asyncio.sleep(0)
    leaver.cancel()  # a reader that leaves must not take the others' wake-up with it
    for pings in (1, 2):  # each ping wakes the reader once
        log.ping("r")
        async with asyncio.timeout(5):
            while len(got) < pings:  # noqa: ASYNC110 - the reader's progress is awaited
                await asyncio.sleep(0)
    offset, order = 0, random.Random(1).sample(PIECES, len(PIECES))
    for piece in order:
        offset += len(piece)
        log.append("r", offset, chunk_event(offset, piece), False)
        await asyncio.sleep(0)
    log.append("r", offset, end_id(offset) + encode("done", {}), True)
    await asyncio.wait_for(reader, 5)
    assert got[:2] == [PING, PING]
    assert got.count(PING) == 2
    events = b"".join(got[2:])  # events that came together are sent together
    assert text_of(events) == "".join(order)  # each once, in order
    assert events.count(b"id: ") == len(PIECES) + 1
    assert events.endswith(end_id(offset) + encode("done", {}))


async def test_an_ended_runs_log_is_released_after_the_retention_time() -> None:
    log = MemoryLog(retention_seconds=0.05, max_bytes=1 << 20)
    write(log, "r")
    assert log.holds("r") and log.size() > 0
    async with asyncio.timeout(5):
        while log.holds("r"):  # noqa: ASYNC110 - released by a timer of the log
            await asyncio.sleep(0.01)
    assert log.size() == 0


async def test_past_the_bound_ended_logs_go_oldest_first_and_running_ones_stay() -> None:
    log = MemoryLog(retention_seconds=60, max_bytes=1)
    write(log, "running", end=False)
    write(log, "old")
    write(log, "new")
    assert log.holds("running")  # a running reply's log is never dropped
    assert not log.holds("old") and not log.holds("new")  # each alone passes the bound
    log = MemoryLog(retention_seconds=60, max_bytes=10_000)
    write(log, "old")
    size = log.size()
    log.max_bytes = size + size // 2
    write(log, "new")
    assert not log.holds("old") and log.holds("new")


@pytest.mark.parametrize("value", ["", "x", "-1", "1.5", "12.endx", "1" * 13])
def test_an_id_we_never_gave_is_refused(value: str) -> None:
    from quartchat.errors import APIError

    with pytest.raises(APIError) as refused:
        resume_point(value)
    assert refused.value.code == "INVALID_REQUEST"


def test_ids_we_give_are_read_back() -> None:
    assert resume_point(None) == (0, False)
    assert resume_point("412") == (412, False)
    assert resume_point("412.end") == (412, True)
