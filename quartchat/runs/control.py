"""The runs of this process: start one, stop one (here, or wherever it runs), read one.

A run is a task that owns its reply's upstream stream: the relay loop (streaming/relay.py) feeds
it, and it appends every event to the run's log (runs/log.py) instead of writing to a client. The
relay's observer (conversations/turns.py ReplyWriter) writes the reply to the database as before.
The request that started the run is only its first reader: its leaving ends nothing. A run ends
with its reply (done, error, MAX_REPLY_SECONDS, revoked credential), with a stop, or at shutdown
when the grace period is over -- the same `LiveStreams` watch as any stream.

Readers: `read()` answers from the log while it holds the run; a run of another process from
the shared log when there is one (Redis), else -- or when Redis cannot -- from the database,
following the saved text while the reply is `streaming` and giving the rest and the end once it
is not. A stop reaches a run in this process at once; a run elsewhere through Redis (`RedisStops`,
at once) and through the database, its reply's status turned `stopped`, which the process running
it looks for every `poll_seconds` (the way without Redis, and the fallback when it is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..conversations import store
from ..conversations.rows import Message
from ..db import Database
from ..db.tables import now
from ..errors import APIError
from ..outages import Outage
from ..streaming import relay
from ..streaming.completion import Completion
from ..streaming.encoders import ChatEvents
from ..streaming.sse import PING, encode
from ..streaming.watch import Holder, LiveStreams, shutting_down
from ..upstream.client import UpstreamStream
from ..usage.limits import Slot
from .log import (
    LogUnavailable,
    Resume,
    RunLog,
    StampedEvents,
    chunk_event,
    end_id,
    interrupted,
    interrupted_end,
)

log = logging.getLogger("quartchat.runs")

CHAT_EVENTS = ChatEvents()


def stopped() -> APIError:
    return APIError(409, "REPLY_STOPPED", "This reply was stopped.")


STOP_CHANNEL = "quartchat:stop"
WAIT_SECONDS = 2.0
"""The longest a stop waits on Redis before leaving it to the database."""
RESUBSCRIBE_SECONDS = 1.0


class RedisStops:
    """Stops between processes through Redis: `PUBLISH quartchat:stop <reply id>`; every process
    with runs is subscribed and stops the ones it holds. A message published while a process is
    not subscribed (Redis away, reconnecting) is lost: the database carries every stop too."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._outage = Outage(
            log,
            "stops from other processes wait for Redis (%s): through the database meanwhile",
        )

    async def publish(self, reply_id: str) -> None:
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await self._redis.publish(STOP_CHANNEL, reply_id)
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("could not publish a stop: %s", type(exc).__name__)

    async def listen(self, on_stop: Callable[[str], None]) -> None:
        """Call `on_stop` with each reply id published, for ever (resubscribing after a loss)."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(STOP_CHANNEL)
                async for message in pubsub.listen():
                    on_stop(message["data"].decode())
            except (RedisError, OSError) as exc:
                self._outage.noticed(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_SECONDS)


class ReplyObserver(relay.Observer, Protocol):
    """The relay's observer of a run (conversations/turns.py ReplyWriter), which also records
    a reply that ended before its stream began."""

    async def failed(self, error: APIError) -> None: ...


class Run:
    """A running reply: its task, and whether it was asked to stop."""

    __slots__ = ("began", "stopping", "task")

    def __init__(self) -> None:
        self.began = False
        self.stopping = False
        self.task: asyncio.Task[None] | None = None


class Runs:
    """This process's runs, and the readers' way in (app.extensions["runs"])."""

    def __init__(
        self,
        db: Database,
        streams: LiveStreams,
        events: RunLog,
        *,
        stops: RedisStops | None = None,
        poll_seconds: float = 1.0,
        checkpoint_seconds: float = 3.0,
    ) -> None:
        self.db = db
        self.streams = streams
        self.log = events
        self.redis_stops = stops
        self.poll_seconds = poll_seconds
        self.checkpoint_seconds = checkpoint_seconds
        """How often a run saves its reply's text (conversations/turns.py ReplyWriter): what
        readers in other processes see of it when there is no Redis."""
        # A `streaming` reply whose saved text has not been touched for three checkpoints
        # belongs to a process that is gone (a slow write may delay one, not three).
        self.stale_seconds = 3 * checkpoint_seconds
        self._runs: dict[str, Run] = {}
        self._stops: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(
        self,
        reply_id: str,
        open_stream: Callable[[], Awaitable[UpstreamStream]],
        observer: ReplyObserver,
        request_id: str,
        *,
        holder: Holder | None,
        slot: Slot,
    ) -> None:
        """Start the run of reply `reply_id`; return once the upstream's stream has begun.

        Raises the upstream's APIError if it fails before that (`observer.failed` has recorded it
        and the slot is given back). The run goes on whatever happens to the caller.
        """
        loop = asyncio.get_running_loop()
        began: asyncio.Future[None] = loop.create_future()
        run = Run()
        self._runs[reply_id] = run
        self.log.open(reply_id)
        run.task = loop.create_task(
            self._run(reply_id, run, began, open_stream, observer, request_id, holder, slot)
        )
        if self._stops is None:
            self._stops = loop.create_task(self._watch_stops())
        if self._listener is None and self.redis_stops is not None:
            self._listener = loop.create_task(self.redis_stops.listen(self._stop_here))
        await asyncio.shield(began)  # a caller that leaves leaves the run running

    async def _run(
        self,
        reply_id: str,
        run: Run,
        began: asyncio.Future[None],
        open_stream: Callable[[], Awaitable[UpstreamStream]],
        observer: ReplyObserver,
        request_id: str,
        holder: Holder | None,
        slot: Slot,
    ) -> None:
        encoder = StampedEvents()
        events = self.log
        end: bytes | None = None
        try:
            try:
                body = await relay.start(
                    open_stream, encoder, self.streams, observer, request_id,
                    holder=holder, slot=slot,
                )  # fmt: skip
            except BaseException as exc:
                cancelled = isinstance(exc, asyncio.CancelledError)
                if run.stopping:
                    error = stopped()
                elif isinstance(exc, APIError):
                    error = exc
                elif cancelled:  # the process is going away
                    error = interrupted()
                else:
                    log.error("unhandled %s opening reply %s", type(exc).__name__, reply_id)
                    error = relay.internal_error()
                await observer.failed(error)
                began.set_exception(error)
                began.exception()  # retrieved here: the caller may be gone
                events.append(reply_id, 0, end_id(0) + CHAT_EVENTS.error(error, request_id), True)
                if cancelled and not run.stopping:
                    raise
                return
            run.began = True
            began.set_result(None)
            if run.stopping:
                self.streams.end_task(asyncio.current_task(), stopped())
            ping = encoder.ping
            async for out in body:
                if out is ping:
                    events.ping(reply_id)
                elif encoder.ended:
                    # Held until the relay's end has saved the reply (the next step of `body`):
                    # a reader that got `done` finds the reply complete in the database.
                    end = out
                else:
                    events.append(reply_id, encoder.offset, out, False)
        finally:
            if began.done() and not began.exception():
                if end is None:  # cancelled: the process is going away
                    failure = interrupted()
                    end = end_id(encoder.offset) + CHAT_EVENTS.error(failure, request_id)
                events.append(reply_id, encoder.offset, end, True)
            del self._runs[reply_id]

    async def stop(self, owner_id: int, reply_id: str) -> None:
        """Stop reply `reply_id` (the owner's: the caller checked): here, at once, waiting for
        its end to be saved; elsewhere, through its status in the database."""
        run = self._runs.get(reply_id)
        if run is None:
            if self.redis_stops is not None:
                await self.redis_stops.publish(reply_id)
            await self.db.run(lambda tx: store.stop(tx, owner_id, reply_id))
            return
        self._stop_here(reply_id)
        if run.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.task), timeout=5)

    async def _watch_stops(self) -> None:
        """Every `poll_seconds` while runs are here: stop those another process marked stopped."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if not self._runs:
                continue
            try:
                async with self.db.read() as connection:
                    marked = await store.stopped_among(connection, list(self._runs))
            except Exception as exc:  # the database is away: the next round asks again
                log.warning("could not look for stopped replies: %s", type(exc).__name__)
                continue
            for reply_id in marked:
                self._stop_here(reply_id)

    def _stop_here(self, reply_id: str) -> None:
        """Stop run `reply_id` if this process has it (another process was asked to)."""
        run = self._runs.get(reply_id)
        if run is not None and run.task is not None and not run.stopping:
            run.stopping = True
            if run.began:
                self.streams.end_task(run.task, stopped())
            else:  # still opening the upstream: nothing to save but the stop
                run.task.cancel()

    def read(self, owner_id: int, reply: Message, after: Resume) -> AsyncIterator[bytes]:
        """Reply `reply`'s events after `after` (the owner's: the caller checked), then the live
        ones until its end."""
        if after.ended:
            return _nothing()
        if self.log.holds(reply.id):
            return self.log.follow(reply.id, after.offset)
        if self.log.shared:
            return self._follow_shared(owner_id, reply, after.offset)
        return self._follow_saved(owner_id, reply, after.offset)

    async def _follow_shared(
        self, owner_id: int, reply: Message, after: int
    ) -> AsyncIterator[bytes]:
        """Another process's run from the shared log; from the database past what it could
        give, when it cannot give all (Redis away, the run not mirrored)."""
        try:
            async for event in self.log.follow(reply.id, after):
                yield event
            return
        except LogUnavailable as unavailable:
            after = unavailable.offset
        async with self.db.read() as connection:  # as it is now: the reader may have been long
            found = await store.message(connection, owner_id, reply.conversation_id, reply.id)
        if found is None:  # deleted meanwhile
            yield interrupted_end(after)
            return
        async for event in self._follow_saved(owner_id, found, after):
            yield event

    async def _follow_saved(
        self, owner_id: int, reply: Message, after: int
    ) -> AsyncIterator[bytes]:
        """From the database: the saved text past `after` as it grows, then the end."""
        loop = asyncio.get_running_loop()
        sent = after
        quiet = loop.time()
        message: Message | None = reply
        while True:
            if message is None:  # deleted meanwhile
                yield interrupted_end(sent)
                return
            text = message.content
            if len(text) > sent:
                yield chunk_event(len(text), text[sent:])
                sent = len(text)
                quiet = loop.time()
            if message.status != "streaming":
                yield end_id(len(text)) + saved_end(message)
                return
            if (now() - message.updated_at).total_seconds() > self.stale_seconds:
                yield interrupted_end(sent)
                return
            if self.streams.stopped:
                yield end_id(sent) + CHAT_EVENTS.error(shutting_down(), "-")
                return
            await asyncio.sleep(self.poll_seconds / 2)
            if loop.time() - quiet >= self.streams.ping_seconds:
                quiet = loop.time()
                yield PING
            async with self.db.read() as connection:
                message = await store.message(connection, owner_id, reply.conversation_id, reply.id)

    async def close(self, grace_seconds: float) -> None:
        """At shutdown: wait for the runs to end (the drain ends them when its grace is over),
        then cancel what is left (their text is saved as `interrupted`)."""
        for task in (self._stops, self._listener):
            if task is not None:
                task.cancel()
        tasks = {run.task for run in self._runs.values() if run.task is not None}
        if tasks:
            _, left = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=5)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that ends at once


def saved_end(reply: Message) -> bytes:
    """The end event of a reply that has ended, from what was saved."""
    if reply.status == "complete":
        completion = Completion(reply.model or "")
        completion.parts.append(reply.content)
        completion.finish_reason = reply.finish_reason
        completion.usage = reply.usage
        return CHAT_EVENTS.done(completion)
    if reply.status == "stopped":
        return CHAT_EVENTS.error(stopped(), "-")
    if reply.status == "error" and reply.error:
        return encode("error", {"error": {**reply.error, "request_id": "-"}})
    return CHAT_EVENTS.error(interrupted(), "-")
