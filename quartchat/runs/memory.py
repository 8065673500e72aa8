"""The event log of runs in this process's memory: no dependency, live to readers in this process.

Each run's events are kept as the bytes sent (encoded once, whatever the number of readers), with
where each ends, so a reader resuming after an id finds its place by bisection. Each waiting
reader holds a future, all of a run's resolved at each append or ping: a reader costs a task
wake-up per event and nothing while it waits. A run's log stays `retention_seconds` after it ended (a reader that was
reconnecting still finds it there), then the database has the reply; ended logs go earlier,
oldest first, when all logs together pass `max_bytes`. Logs of running replies are never dropped:
they are bounded by the replies themselves (MAX_STREAMS_PER_USER and MAX_REPLY_SECONDS).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator

from ..streaming.sse import PING
from .log import rest_of

# The terminal event ends where the last chunk ended; counted half a character later, so that
# resuming after that chunk's id bisects to it.
_TERMINAL = 0.5


class _Log:
    __slots__ = ("ended", "ends", "events", "pings", "size", "waiters")

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.events: list[bytes] = []
        self.size = 0
        self.pings = 0
        self.ended = False
        self.waiters: list[asyncio.Future[None]] = []

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():  # a reader that left has cancelled its own
                waiter.set_result(None)

    async def changed(self) -> None:
        # A future per waiting reader: one that leaves cancels only its own.
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        await waiter


class MemoryLog:
    """`RunLog` in this process (runs/log.py)."""

    shared = False

    def __init__(self, retention_seconds: float, max_bytes: int) -> None:
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        self._logs: dict[str, _Log] = {}
        self._ended: OrderedDict[str, _Log] = OrderedDict()  # oldest first
        self._size = 0

    def open(self, run_id: str) -> None:
        self._logs[run_id] = _Log()

    def append(self, run_id: str, offset: int, event: bytes, last: bool) -> None:
        log = self._logs.get(run_id)
        if log is None or log.ended:
            return
        log.ends.append(offset + _TERMINAL if last else offset)
        log.events.append(event)
        log.size += len(event)
        self._size += len(event)
        if last:
            log.ended = True
            self._ended[run_id] = log
            asyncio.get_running_loop().call_later(self.retention_seconds, self._drop, run_id, log)
            self._trim()
        log.wake()

    def ping(self, run_id: str) -> None:
        log = self._logs.get(run_id)
        if log is not None:
            log.pings += 1
            log.wake()

    def holds(self, run_id: str) -> bool:
        return run_id in self._logs

    def size(self) -> int:
        """Bytes held by all logs."""
        return self._size

    async def follow(self, run_id: str, after: int) -> AsyncIterator[bytes]:
        log = self._logs.get(run_id)
        if log is None:
            return
        i = bisect_right(log.ends, after)
        start = log.ends[i - 1] if i else 0
        if i < len(log.ends) and start < after < log.ends[i]:
            # An id inside a chunk (none we give): the rest of that chunk, re-encoded.
            yield rest_of(log.events[i], int(log.ends[i]), int(log.ends[i] - after))
            i += 1
        pings = log.pings
        while True:
            n = len(log.events)
            if i < n:
                yield log.events[i] if n == i + 1 else b"".join(log.events[i:n])
                i = n
            if log.ended:
                return
            await log.changed()
            if log.pings != pings:
                pings = log.pings
                if i == len(log.events):
                    yield PING

    def _drop(self, run_id: str, log: _Log) -> None:
        if self._logs.get(run_id) is log:
            del self._logs[run_id]
        if self._ended.pop(run_id, None) is not None:
            self._size -= log.size

    def _trim(self) -> None:
        while self._size > self.max_bytes and self._ended:
            run_id, log = next(iter(self._ended.items()))
            self._drop(run_id, log)
