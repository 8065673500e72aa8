"""The per-stream watch: pings, idle timeout, shutdown -- and cancellations that are not its own."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

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


class Arriving:
    """An upstream that sends something every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        await asyncio.sleep(self.every)
        return b"data"


async def test_a_stream_started_after_stop_all_is_told_to_stop_at_once() -> None:
    streams = LiveStreams(ping_seconds=60, idle_seconds=60)
    streams.stop_all()
    watch = streams.watch()
    with pytest.raises(APIError) as raised:
        await watch.next(Arriving(every=0))
    assert raised.value.code == "SERVER_SHUTTING_DOWN"
    streams.forget(watch)


async def test_a_stop_while_the_stream_is_sending_lets_the_send_finish() -> None:
    # Cancelling the task mid-send would cut the stream without its SERVER_SHUTTING_DOWN event.
    streams = LiveStreams(ping_seconds=60, idle_seconds=60)
    watch = streams.watch()
    assert await watch.next(Arriving(every=0)) == b"data"
    streams.stop_all()
    await asyncio.sleep(0.01)  # the send to the client, which must not be interrupted
    watch.sent()
    with pytest.raises(APIError) as raised:
        await watch.next(Arriving(every=0))
    assert raised.value.code == "SERVER_SHUTTING_DOWN"
    streams.forget(watch)


# -- the timer, on a virtual clock: exact times, and a loop that spins is caught ------------------


class VirtualTime(selectors.DefaultSelector):
    """An event loop's selector whose waits take no time: waiting `timeout` seconds moves the
    clock on by that much. A loop that keeps polling without the clock ever moving is spinning."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.polls_without_sleep = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            self.polls_without_sleep += 1
            if self.polls_without_sleep > 10_000:
                raise RuntimeError("the event loop never sleeps: a timer is spinning")
            return ready
        if timeout is None:
            raise RuntimeError("nothing is scheduled: the stream would wait forever")
        self.now += timeout
        self.polls_without_sleep = 0
        return ready


T = TypeVar("T")


def on_virtual_time(scenario: Callable[[VirtualTime], Awaitable[T]]) -> T:
    selector = VirtualTime()
    loop = asyncio.SelectorEventLoop(selector)
    loop.time = lambda: selector.now  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(scenario(selector))
    finally:
        loop.close()


def test_a_silent_upstream_gets_a_ping_one_ping_period_after_the_last_one_went_out() -> None:
    async def pings_in_ten_seconds(clock: VirtualTime) -> list[float]:
        streams = LiveStreams(ping_seconds=1, idle_seconds=100)
        watch = streams.watch()
        pinged = []
        while clock.now < 10.5:
            assert await watch.next(Silent()) is None
            pinged.append(round(clock.now, 3))
            await asyncio.sleep(0.1)  # sending the ping takes a moment
            watch.sent()
        streams.forget(watch)
        return pinged

    assert on_virtual_time(pings_in_ten_seconds) == [round(1 + 1.1 * i, 3) for i in range(10)]


def test_a_busy_stream_gets_no_pings() -> None:
    async def pings_in_ten_seconds(clock: VirtualTime) -> int:
        streams = LiveStreams(ping_seconds=1, idle_seconds=100)
        watch = streams.watch()
        pings = 0
        upstream = Arriving(every=0.3)
        while clock.now < 10:
            pings += await watch.next(upstream) is None
            watch.sent()
        streams.forget(watch)
        return pings

    assert on_virtual_time(pings_in_ten_seconds) == 0


def test_an_upstream_silent_for_the_idle_timeout_is_ended_then_even_between_pings() -> None:
    async def ended_at(clock: VirtualTime) -> float:
        streams = LiveStreams(ping_seconds=10, idle_seconds=3)
        watch = streams.watch()
        assert await watch.next(Arriving(every=1)) == b"data"
        watch.sent()
        with pytest.raises(APIError) as raised:
            await watch.next(Silent())
        assert raised.value.code == "UPSTREAM_TIMEOUT"
        streams.forget(watch)
        return clock.now

    assert on_virtual_time(ended_at) == 4.0


def test_a_stream_blocked_sending_to_a_slow_client_does_not_spin_its_timer() -> None:
    async def block_in_a_send(clock: VirtualTime) -> float:
        streams = LiveStreams(ping_seconds=1, idle_seconds=2)
        watch = streams.watch()
        await watch.next(Arriving(every=0.5))
        await asyncio.sleep(5)  # the client reads nothing for longer than the ping and idle times
        watch.sent()
        streams.forget(watch)
        return clock.now

    assert on_virtual_time(block_in_a_send) == 5.5
