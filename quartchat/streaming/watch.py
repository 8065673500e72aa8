"""Live streams: their keep-alive pings, their idle timeout, their total duration, and their end
at shutdown or when their user's credential is revoked.

A relayed stream spends its life waiting on upstream reads. Five things must interrupt that wait
without losing data: a keep-alive ping when nothing has been sent for `SSE_PING_SECONDS`, an
upstream silent for `REQUEST_TIMEOUT_SECONDS`, a reply running for `MAX_REPLY_SECONDS`, the end
of the shutdown grace period, and its user disabled or logged out (`LiveStreams.end_held`). A timer
per read does the first two -- `asyncio.timeout()` around every read, aiohttp's `sock_read`
re-armed on every packet -- at the cost of a timer (and, for the former, a `Timeout` object and a
`current_task()` lookup) per relayed chunk: together about a sixth of the relay's CPU. Here each
stream has one timer that fires about once per ping period and re-arms itself from what the
stream recorded since, so a busy stream pays for two clock reads per chunk. The reads it
interrupts must be cancel-safe (`UpstreamStream.__anext__` is).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import APIError

T = TypeVar("T")


def shutting_down() -> APIError:
    return APIError(
        503,
        "SERVER_SHUTTING_DOWN",
        "The server is restarting and ended this reply early; send it again in a moment.",
    )


def idle_timeout() -> APIError:
    return APIError(504, "UPSTREAM_TIMEOUT", "The upstream did not answer in time.")


def reply_too_long(seconds: float) -> APIError:
    return APIError(
        504,
        "REPLY_TOO_LONG",
        f"The reply was ended after {seconds:g} seconds, the longest a reply may run here.",
    )


def credential_revoked() -> APIError:
    return APIError(
        401,
        "CREDENTIAL_REVOKED",
        "This reply was ended: you were logged out, your API token was revoked, or your account "
        "was disabled.",
    )


@dataclass(frozen=True, slots=True)
class Holder:
    """Who a stream runs for, and by what credential (auth.principal.Principal's fields), so
    that logging out or disabling a user can end their streams."""

    user_id: int
    via: str  # session | token | header
    credential: str


class StreamWatch:
    """One stream's timer: it wakes the stream's wait for the upstream (by cancelling it) when a
    ping is due, when the upstream has been silent for the idle timeout, or at shutdown.

    The stream calls `next()` to wait for its upstream and `sent()` after each write to its
    client; nothing else of the watch's state is shared.
    """

    __slots__ = (
        "_deadline",
        "_handle",
        "_idle",
        "_last_sent",
        "_longest",
        "_loop",
        "_ping",
        "_reading",
        "_task",
        "_timed_out",
        "_waiting_since",
        "_woke",
        "ending",
        "stopping",
    )

    def __init__(
        self,
        ping_seconds: float,
        idle_seconds: float,
        *,
        stopping: bool,
        longest_seconds: float = float("inf"),
    ) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - streams always run in a task
            raise RuntimeError("StreamWatch needs a running task")
        self._task = task
        self._ping = ping_seconds
        self._idle = idle_seconds
        self._woke = False
        self._reading = False
        self._timed_out = False
        self.stopping = stopping
        # Why the stream must end, when not for a shutdown (`stopping`): too long, or revoked.
        self.ending: APIError | None = None
        self._last_sent = self._waiting_since = now = self._loop.time()
        self._longest = longest_seconds
        self._deadline = now + longest_seconds
        self._handle = self._loop.call_at(
            min(now + ping_seconds, now + idle_seconds, self._deadline), self._tick
        )

    async def next(self, stream: AsyncIterator[T]) -> T | None:
        """The stream's next item, or None when a keep-alive ping is due.

        Raises StopAsyncIteration at the stream's end, and APIError when the upstream has been
        silent for the idle timeout (`UPSTREAM_TIMEOUT`), the server is shutting down, or the
        stream was ended (`ending`: `REPLY_TOO_LONG`, `CREDENTIAL_REVOKED`).
        """
        if self.stopping:
            raise shutting_down()
        if self.ending is not None:
            raise self.ending
        self._reading = True
        try:
            item = await stream.__anext__()
            self._waiting_since = self._loop.time()
            return item
        except asyncio.CancelledError:
            if not self._woken():
                raise
        finally:
            self._reading = False
        if self._timed_out:
            raise idle_timeout()
        if self.stopping:
            raise shutting_down()
        if self.ending is not None:
            raise self.ending
        return None

    @property
    def task(self) -> asyncio.Task[object]:
        """The task the stream runs in."""
        return self._task

    def sent(self) -> None:
        """The stream has just written to its client: no ping is due for a while."""
        self._last_sent = self._loop.time()

    def _tick(self) -> None:
        now = self._loop.time()
        ping_due = self._last_sent + self._ping
        idle_due = self._waiting_since + self._idle
        if now >= self._deadline:
            self.end(reply_too_long(self._longest))
            return  # nothing more to time: the stream ends at its next wait, or now
        if self._reading:  # a stream that is not reading is sending: it needs no ping
            if now >= idle_due:
                self._timed_out = True
                self._wake()
            elif now >= ping_due:
                self._wake()
        # Re-armed for whichever is due next, from what the stream has recorded since: one timer
        # event per ping period, however many chunks went by.
        self._handle = self._loop.call_at(
            min(
                ping_due if ping_due > now else now + self._ping,
                idle_due if idle_due > now else now + self._idle,
                self._deadline,
            ),
            self._tick,
        )

    def _wake(self) -> None:
        if self._reading and not self._woke:
            self._woke = True
            self._task.cancel()

    def _woken(self) -> bool:
        """After the wait raised CancelledError: True if this watch alone caused it."""
        if not self._woke:
            return False
        self._woke = False
        # Like asyncio.timeout(): if anything else cancelled the task too (the client left), the
        # count stays above zero and the cancellation goes on.
        return self._task.uncancel() == 0

    def stop(self) -> None:
        """End the stream: interrupt its wait now, or have it notice before its next one."""
        self.stopping = True
        self._wake()

    def end(self, error: APIError) -> None:
        """End the stream with `error` (the first reason given stays), as `stop()` does."""
        if self.ending is None:
            self.ending = error
        self._wake()

    def close(self) -> None:
        self._handle.cancel()


class LiveStreams:
    """The app's open streams, so that shutdown can drain them, and by whom they are held, so
    that a user's can be ended (`end_held`)."""

    def __init__(
        self, ping_seconds: float, idle_seconds: float, longest_seconds: float = float("inf")
    ) -> None:
        self.ping_seconds = ping_seconds
        self.idle_seconds = idle_seconds
        self.longest_seconds = longest_seconds
        self.draining = False
        self._stopped = False
        self._watches: dict[StreamWatch, Holder | None] = {}
        self._held = 0
        # Set while any held stream is open: the credential check (usage/revocation.py) runs
        # only then.
        self.holding = asyncio.Event()

    def __len__(self) -> int:
        return len(self._watches)

    def refuse_if_draining(self) -> None:
        """New chats are refused once shutdown began: they would be cut off by it."""
        if self.draining:
            raise shutting_down()

    def watch(self, holder: Holder | None = None) -> StreamWatch:
        """A watch for the stream running in the current task, held by `holder` (None: no
        accounts); `forget()` it when it ends."""
        watch = StreamWatch(
            self.ping_seconds,
            self.idle_seconds,
            stopping=self._stopped,
            longest_seconds=self.longest_seconds,
        )
        self._watches[watch] = holder
        if holder is not None:
            self._held += 1
            self.holding.set()
        return watch

    def forget(self, watch: StreamWatch) -> None:
        watch.close()
        if self._watches.pop(watch, None) is not None:  # it was held by someone
            self._held -= 1
            if not self._held:
                self.holding.clear()

    def holders(self) -> set[Holder]:
        """The distinct holders of the open streams."""
        return {h for h in self._watches.values() if h is not None}

    def end_held(self, which: Callable[[Holder], bool] | Iterable[Holder]) -> int:
        """End the streams whose holder is one of `which` (or that `which` picks) with
        `CREDENTIAL_REVOKED`; how many were ended."""
        pick = which if callable(which) else set(which).__contains__
        ended = 0
        for watch, holder in list(self._watches.items()):
            if holder is not None and pick(holder):
                watch.end(credential_revoked())
                ended += 1
        return ended

    def end_task(self, task: asyncio.Task[object] | None, error: APIError) -> bool:
        """End the stream running in `task` with `error` (a run stopped: runs/control.py);
        False if no stream runs there."""
        for watch in self._watches:
            if watch.task is task:
                watch.end(error)
                return True
        return False

    def end_user(self, user_id: int, via: str | None = None, credential: str | None = None) -> int:
        """End user `user_id`'s streams: all of them, those by one kind of credential (`via`),
        or those by one credential."""
        return self.end_held(
            lambda h: (
                h.user_id == user_id
                and (via is None or h.via == via)
                and (credential is None or h.credential == credential)
            )
        )

    @property
    def stopped(self) -> bool:
        """The shutdown's grace period is over: every stream is being ended."""
        return self._stopped

    def drain(self, grace_seconds: float) -> None:
        """Refuse new streams from now on; end those still running after `grace_seconds`."""
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().call_later(grace_seconds, self.stop_all)

    def stop_all(self) -> None:
        self._stopped = True
        for watch in list(self._watches):
            watch.stop()
