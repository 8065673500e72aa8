"""Live streams: their keep-alive pings, their idle timeout, and their end at shutdown.

A relayed stream spends its life waiting on upstream reads. Three things must interrupt that wait
without losing data: a keep-alive ping when nothing has been sent for `SSE_PING_SECONDS`, an
upstream silent for `REQUEST_TIMEOUT_SECONDS`, and the end of the shutdown grace period. A timer
per read does the first two -- `asyncio.timeout()` around every read, aiohttp's `sock_read`
re-armed on every packet -- at the cost of a timer (and, for the former, a `Timeout` object and a
`current_task()` lookup) per relayed chunk: together about a sixth of the relay's CPU. Here each
stream has one timer that fires about once per ping period and re-arms itself from what the relay
recorded since, so a busy stream pays for a few attribute stores per read. The reads it
interrupts must be cancel-safe (`AiohttpStream.read_chunk()` is).
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
    """One stream's timer. It wakes the stream's upstream read (by cancelling it) when a ping is
    due, when the upstream has been silent for the idle timeout, or at shutdown.

    The relay sets `reading` around each read, `waiting_since` when a read begins after new data,
    `last_sent` after each send, and calls `woken()` when a read is cancelled; then `timed_out` or
    `stopping` say why, and otherwise a ping is due.
    """

    __slots__ = (
        "_handle",
        "_idle",
        "_loop",
        "_ping",
        "_task",
        "_woke",
        "last_sent",
        "reading",
        "stopping",
        "timed_out",
        "waiting_since",
    )

    def __init__(self, ping_seconds: float, idle_seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - relay() always runs in a task
            raise RuntimeError("StreamWatch needs a running task")
        self._task = task
        self._ping = ping_seconds
        self._idle = idle_seconds
        self._woke = False
        self.reading = False
        self.stopping = False
        self.timed_out = False
        self.last_sent = self.waiting_since = now = self._loop.time()
        self._handle = self._loop.call_at(now + min(ping_seconds, idle_seconds), self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        ping_due = self.last_sent + self._ping
        idle_due = self.waiting_since + self._idle
        if self.reading:  # a stream that is not reading is sending: it needs no ping
            if now >= idle_due:
                self.timed_out = True
                self._wake()
            elif now >= ping_due:
                self._wake()
        # Re-armed for whichever is due next, from what the relay has recorded since: one timer
        # event per ping period, however many chunks went by.
        self._handle = self._loop.call_at(
            min(
                ping_due if ping_due > now else now + self._ping,
                idle_due if idle_due > now else now + self._idle,
            ),
            self._tick,
        )

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

    def __init__(self, ping_seconds: float, idle_seconds: float) -> None:
        self.ping_seconds = ping_seconds
        self.idle_seconds = idle_seconds
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
        watch = StreamWatch(self.ping_seconds, self.idle_seconds)
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
