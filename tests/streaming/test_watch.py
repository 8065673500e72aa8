"""The per-stream watch: pings, idle timeout, shutdown -- and cancellations that are not its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from quartchat.errors import APIError
from quartchat.streaming.watch import LiveStreams, StreamWatch


class Silent:
    """An upstream that never says anything; counts how often it was waited on."""

    def __init__(self) -> None:
        self.waits = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        self.waits += 1
        await asyncio.sleep(3600)
        return b""


async def pings_until_an_error(watch: StreamWatch) -> tuple[int, APIError]:
    silent = Silent()
    pings = 0
    while True:
        try:
            item = await watch.next(silent)
        except APIError as error:
            return pings, error
        assert item is None
        pings += 1
        watch.sent()


async def test_a_silent_stream_is_woken_for_pings_then_times_out() -> None:
    streams = LiveStreams(ping_seconds=0.05, idle_seconds=0.2)
    watch = streams.watch()
    pings, error = await pings_until_an_error(watch)
    assert error.code == "UPSTREAM_TIMEOUT"
    assert pings >= 2
    streams.forget(watch)


async def test_stop_all_ends_a_waiting_stream_with_shutting_down() -> None:
    streams = LiveStreams(ping_seconds=60, idle_seconds=60)
    watch = streams.watch()
    asyncio.get_running_loop().call_later(0.05, streams.stop_all)
    with pytest.raises(APIError) as raised:
        await watch.next(Silent())
    assert raised.value.code == "SERVER_SHUTTING_DOWN"
    with pytest.raises(APIError):  # and it does not wait again
        await watch.next(Silent())
    streams.forget(watch)
    assert len(streams) == 0


async def test_a_cancellation_from_elsewhere_during_a_wake_still_cancels() -> None:
    # The client leaves at the moment a ping is due: the watch must not swallow that.
    streams = LiveStreams(ping_seconds=0.05, idle_seconds=60)

    async def stream_task() -> None:
        watch = streams.watch()
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.05, task.cancel)  # same moment as the wake
        while True:
            await watch.next(Silent())
            watch.sent()

    task = asyncio.ensure_future(stream_task())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)


async def test_a_cancellation_from_elsewhere_is_never_taken_for_a_ping() -> None:
    streams = LiveStreams(ping_seconds=60, idle_seconds=60)
    started = asyncio.Event()

    async def stream_task() -> object:
        watch = streams.watch()
        started.set()
        return await watch.next(Silent())

    task = asyncio.ensure_future(stream_task())
    await started.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
