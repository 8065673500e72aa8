"""Live streams: their keep-alive pings, and their end when the server shuts down.

A relayed stream spends its life waiting on upstream reads. Two things must interrupt that wait
without losing data: a keep-alive ping when nothing has been sent for `SSE_PING_SECONDS`, and the
end of the shutdown grace period. `asyncio.timeout()` around every read did the first, but it
costs a `Timeout` object, a timer and a `current_task()` lookup per relayed chunk (about a tenth
of the relay's CPU). Here each stream has one timer that fires once per ping period and re-arms
itself from the time of the last send, so a busy stream pays for two attribute stores per read.
The reads it interrupts must be cancel-safe (`AiohttpStream.read_chunk()` is).
"""

from __future__ import annotations

import asyncio

from .errors import APIError


def shutting_down() -> APIError:
    return APIError(
        503,
        "SERVER_SHUTTING_DOWN",
        "The server is restarting and ended this reply early; send it again in a moment.",
    )


class StreamWatch:
    """One stream's timer. The relay sets `reading` around each upstream read and calls `woken()`
    when that read is cancelled; `stopping` tells it to end with an error event."""

    __slots__ = (
        "_handle",
        "_loop",
        "_period",
        "_task",
        "_woke",
        "last_sent",
        "reading",
        "stopping",
    )

    def __init__(self, period: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - relay() always runs in a task
            raise RuntimeError("StreamWatch needs a running task")
        self._task = task
        self._period = period
        self._woke = False
        self.reading = False
        self.stopping = False
        self.last_sent = self._loop.time()
        self._handle = self._loop.call_at(self.last_sent + period, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        due = self.last_sent + self._period
        if now < due:  # something was sent since this timer was set: wait out the new gap
            self._handle = self._loop.call_at(due, self._tick)
            return
        self._handle = self._loop.call_at(now + self._period, self._tick)
        self._wake()  # a stream that is not reading is sending, and needs no ping

    def _wake(self) -> None:
        if self.reading and not self._woke:
            self._woke = True
            self._task.cancel()

    def woken(self) -> bool:
        """After a read raised CancelledError: True if this watch caused it (and nothing else)."""
        if not self._woke:
            return False
        self._woke = False
        # Like asyncio.timeout(): a cancellation from elsewhere (the client left) still counts.
        return self._task.uncancel() == 0

    def stop(self) -> None:
        """End the stream: interrupt its read now, or have it notice after its current send."""
        self.stopping = True
        self._wake()

    def close(self) -> None:
        self._handle.cancel()


class LiveStreams:
    """The app's open streams, so that shutdown can drain them."""

    def __init__(self, ping_seconds: float) -> None:
        self.ping_seconds = ping_seconds
        self.draining = False
        self._stopped = False
        self._watches: set[StreamWatch] = set()

    def __len__(self) -> int:
        return len(self._watches)

    def refuse_if_draining(self) -> None:
        """New chats are refused once shutdown began: they would be cut off by it."""
        if self.draining:
            raise shutting_down()

    def watch(self) -> StreamWatch:
        watch = StreamWatch(self.ping_seconds)
        watch.stopping = self._stopped
        self._watches.add(watch)
        return watch

    def forget(self, watch: StreamWatch) -> None:
        watch.close()
        self._watches.discard(watch)

    def drain(self, grace_seconds: float) -> None:
        """Refuse new streams from now on; end those still running after `grace_seconds`."""
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().call_later(grace_seconds, self.stop_all)

    def stop_all(self) -> None:
        self._stopped = True
        for watch in list(self._watches):
            watch.stop()
