"""The event log of runs in Redis Streams: live to readers in every process and on every host.

The process running a reply keeps its events in memory as without Redis (`MemoryLog`: readers
there cost what they cost without Redis) and mirrors them to Redis for the other processes:

- `quartchat:run:{reply_id}`, a stream: one entry per event, with the stream id `{offset}-0` for
  a chunk and `{offset}-1` for the end (offset: the reply's length in characters up to the
  event, as in its SSE id), fields `e` (the event's bytes) and `s` (where its text starts, so a
  reader sees a gap instead of skipping text). `MAXLEN ~ max_entries`; it expires
  `retention_seconds` after the end (and a while after its process stopped refreshing it).
- `quartchat:run:{reply_id}:holder`: `live` while a process runs the reply, refreshed every
  `beat_seconds` to live `holder_seconds`; `db` when the run could not be mirrored (Redis was
  away for a moment): readers follow the database instead. Gone without an end: the process died.

Writes cost no round trip per event: `append` only buffers, and one flusher sends everything
buffered since it last ran (every run's events, and the holders' heartbeat when due) in one
script call, so a wake-up of the event loop that relayed chunks of a hundred replies is one round
trip. Readers elsewhere replay with XRANGE and wait with XREAD BLOCK on their own connections
(a blocked read holds its connection; the commands' pool must not run out because of them).

Redis away: the runs go on and their replies are saved (the database never waits on Redis); a
run whose events could not all be mirrored is marked and mirrors nothing more, and its readers
elsewhere go on from the database (`LogUnavailable`), as without Redis. A warning is logged at
most once a minute, with the exception's name only (REDIS_URL may hold a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..outages import Outage
from ..streaming.sse import PING
from .log import LogUnavailable, interrupted_end, rest_of
from .memory import MemoryLog

log = logging.getLogger("quartchat.runs")

HOLDER_SECONDS = 3.5
"""How long a holder key lives unless refreshed (every BEAT_SECONDS): a reader learns that a
process died within HOLDER_SECONDS + BLOCK_SECONDS of its last heartbeat, under 5 s."""
BEAT_SECONDS = 1.0
BLOCK_SECONDS = 1.0
"""How long a reader's XREAD BLOCK waits before it looks at the holder again."""
MAX_ENTRIES = 100_000
"""`XADD … MAXLEN ~`: a stream's entries, far more than a reply makes (chunks are coalesced
per read of the upstream); a reader resuming before the kept ones goes to the database."""
WAIT_SECONDS = 2.0
"""The longest a command (not a blocking read) waits on Redis."""
RECHECK_SECONDS = 5.0
"""After Redis failed, how long new events are not mirrored before trying again."""

LIVE = b"live"
DATABASE = b"db"


# A flush: every write of a wake-up (and the heartbeat when due) in one script call, so one
# round trip and one reply to parse, however many events (a pipeline has a reply per command,
# and parsing them cost the writer more than the events themselves). KEYS: a stream and its
# holder per write; ARGV: MAXLEN, the retention, the holder's and a running stream's lifetimes
# (ms), then four per write: what, the entry id or holder value, the event, where its text starts.
_MIRROR = """
local maxlen, retention, holder_ms, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 1, #KEYS / 2 do
  local stream, holder = KEYS[2 * i - 1], KEYS[2 * i]
  local what, value, event, start = ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3], ARGV[4 * i + 4]
  if what == 'event' or what == 'end' then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, value, 'e', event, 's', start)
    if what == 'end' then
      redis.call('PEXPIRE', stream, retention)
      redis.call('DEL', holder)
    end
  elseif what == 'hold' then
    redis.call('SET', holder, value, 'PX', holder_ms)
    redis.call('PEXPIRE', stream, keep)
  else
    redis.call('SET', holder, 'db', 'PX', retention)
  end
end
return 1
"""


def stream_key(run_id: str) -> str:
    return f"quartchat:run:{run_id}"


def holder_key(run_id: str) -> str:
    return f"quartchat:run:{run_id}:holder"


class _Mirror:
    """A run of this process, as mirrored to Redis: where its text is, and whether it still is
    mirrored (`broken`: some of its events never reached Redis)."""

    __slots__ = ("broken", "offset")

    def __init__(self, broken: bool) -> None:
        self.offset = 0
        self.broken = broken


# A buffered write: the run, its mirror, where the event's text starts and ends, the event
# (None: the run has just opened), whether it is the last.
_Write = tuple[str, _Mirror, int, int, bytes | None, bool]


class RedisLog:
    """`RunLog` (runs/log.py) on Redis Streams, over this process's `MemoryLog`.

    `redis` runs the commands; `blocking` (a client with its own connections) the readers'
    XREAD BLOCK.
    """

    shared = True

    def __init__(
        self,
        redis: Redis,
        blocking: Redis,
        local: MemoryLog,
        *,
        ping_seconds: float,
        max_entries: int = MAX_ENTRIES,
        holder_seconds: float = HOLDER_SECONDS,
        beat_seconds: float = BEAT_SECONDS,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        self.local = local
        self.ping_seconds = ping_seconds
        self._redis = redis
        self._blocking = blocking
        self._max_entries = max_entries
        self._retention_ms = max(1, int(local.retention_seconds * 1000))
        self._holder_ms = max(1, int(holder_seconds * 1000))
        # A stream whose process stopped refreshing it outlives its holder by the retention: a
        # reader arriving meanwhile learns the run was interrupted rather than following the
        # database until its staleness shows.
        self._keep_ms = self._holder_ms + self._retention_ms
        self._beat_seconds = beat_seconds
        self._block_ms = max(1, int(block_seconds * 1000))
        self._held: dict[str, _Mirror] = {}
        self._pending: list[_Write] = []
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._mirror = redis.register_script(_MIRROR)
        self._down_until = -math.inf
        self._outage = Outage(
            log,
            "Redis unreachable (%s): replies are followed across processes through the "
            "database meanwhile",
        )

    # -- the writer side: the process running the reply ----------------------------------------

    def open(self, run_id: str) -> None:
        self.local.open(run_id)
        mirror = _Mirror(broken=time.monotonic() < self._down_until)
        self._held[run_id] = mirror
        self._buffer((run_id, mirror, 0, 0, None, False))

    def append(self, run_id: str, offset: int, event: bytes, last: bool) -> None:
        self.local.append(run_id, offset, event, last)
        mirror = self._held.get(run_id)
        if mirror is None:
            return
        if last:
            del self._held[run_id]
        start, mirror.offset = mirror.offset, offset
        if not mirror.broken and time.monotonic() < self._down_until:
            mirror.broken = True  # this event would be missing from the stream
        if not mirror.broken or last:
            self._buffer((run_id, mirror, start, offset, event, last))

    def ping(self, run_id: str) -> None:
        # Readers elsewhere ping when their blocking read comes back empty.
        self.local.ping(run_id)

    def holds(self, run_id: str) -> bool:
        """Whether this process has the run (other processes' runs: `follow` finds them)."""
        return self.local.holds(run_id)

    async def aclose(self) -> None:
        """Send what is buffered (the last runs' ends), then stop."""
        if self._flusher is not None:
            if self._pending:
                with contextlib.suppress(RedisError, TimeoutError, OSError):
                    await self._flush(beat=False)
            self._flusher.cancel()
            self._flusher = None
        await self._blocking.aclose()

    def _buffer(self, write: _Write) -> None:
        self._pending.append(write)
        self._dirty.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._beat_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_beat):
                    await self._dirty.wait()
            beat = loop.time() >= next_beat
            if beat:
                next_beat = loop.time() + self._beat_seconds
            try:
                await self._flush(beat)
            except (RedisError, TimeoutError, OSError) as exc:
                self._unreachable(exc)
            except Exception:  # a bug must not end the mirroring of every later run
                log.exception("could not mirror run events to Redis")

    async def _flush(self, beat: bool) -> None:
        """One round trip: the buffered writes, and (`beat`) the holders' heartbeat."""
        self._dirty.clear()
        batch, self._pending = self._pending, []
        if time.monotonic() < self._down_until:
            self._broken(batch)
            return
        held = list(self._held.items()) if beat else []
        if not batch and not held:
            return
        keys: list[str] = []
        args: list[bytes | str | int] = [
            self._max_entries, self._retention_ms, self._holder_ms, self._keep_ms,
        ]  # fmt: skip
        for run_id, mirror, start, offset, event, last in batch:
            keys += (stream_key(run_id), holder_key(run_id))
            if event is None:
                args += (b"hold", DATABASE if mirror.broken else LIVE, b"", 0)
            elif mirror.broken:  # its end: readers that see `db` go to the database
                args += (b"gone", b"", b"", 0)
            else:
                args += (b"end" if last else b"event", b"%d-%d" % (offset, last), event, start)
        for run_id, mirror in held:
            keys += (stream_key(run_id), holder_key(run_id))
            args += (b"hold", DATABASE if mirror.broken else LIVE, b"", 0)
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await self._mirror(keys=keys, args=args)
        except RedisError as exc:
            # Some of the writes may be in Redis, not all: those runs mirror nothing more.
            self._broken(batch)
            if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
                self._down_until = time.monotonic() + RECHECK_SECONDS
            raise  # else a refused write (a bug): logged, and the next flush goes on
        except BaseException:
            self._down_until = time.monotonic() + RECHECK_SECONDS
            self._broken(batch)
            raise

    def _broken(self, batch: list[_Write]) -> None:
        for run_id, mirror, *_ in batch:
            if not mirror.broken:
                mirror.broken = True
                log.info("reply %s: readers elsewhere follow the database", run_id)

    def _unreachable(self, exc: BaseException) -> None:
        self._outage.noticed(exc)

    # -- the readers ------------------------------------------------------------------------------

    def follow(self, run_id: str, after: int) -> AsyncIterator[bytes]:
        """This process's run from memory; another's from Redis, raising `LogUnavailable` when
        Redis cannot give all of it (not there, away, or missing entries)."""
        if self.local.holds(run_id):
            return self.local.follow(run_id, after)
        return self._follow_elsewhere(run_id, after)

    async def _follow_elsewhere(self, run_id: str, after: int) -> AsyncIterator[bytes]:
        # Every command of a reader goes to the readers' client: a crowd of readers arriving at
        # once must not take the pool that runs' writes and the stream slots use.
        stream, holder = stream_key(run_id), holder_key(run_id)
        loop = asyncio.get_running_loop()
        sent = after
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                async with self._blocking.pipeline(transaction=False) as pipe:
                    pipe.xrange(stream, f"({after}-0", "+")
                    pipe.get(holder)
                    entries, held = await pipe.execute()
            if held == DATABASE or (held is None and not entries):
                raise LogUnavailable(after)  # not mirrored, or long ended: the database has it
            last_id = f"{after}-0"
            quiet = loop.time()
            while True:
                if entries:
                    out, sent, last_id, ended = _events(entries, sent)
                    entries = []  # not kept while this reader waits (a replay may be large)
                    yield out
                    if ended:
                        return
                    quiet = loop.time()
                entries = await self._wait(stream, last_id)
                if entries:
                    continue
                async with asyncio.timeout(WAIT_SECONDS):
                    held = await self._blocking.get(holder)
                if held == DATABASE:
                    raise LogUnavailable(sent)
                if held is None:
                    # Its end may have come between the read and this look (the end and the
                    # holder's removal go together).
                    async with asyncio.timeout(WAIT_SECONDS):
                        entries = await self._blocking.xrange(stream, f"({last_id}", "+")
                    if not entries:
                        yield interrupted_end(sent)
                        return
                elif loop.time() - quiet >= self.ping_seconds:
                    quiet = loop.time()
                    yield PING
        except (RedisError, TimeoutError, OSError) as exc:
            self._unreachable(exc)
            raise LogUnavailable(sent) from None

    async def _wait(self, stream: str, last_id: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        # Bounded beyond its BLOCK: a Redis that stops answering (not one that is down, which
        # fails at once) must not hold a reader for ever.
        async with asyncio.timeout(self._block_ms / 1000 + WAIT_SECONDS):
            found: Any = await self._blocking.xread({stream: last_id}, block=self._block_ms)
        if not found:
            return []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = found[0][1]  # [[key, entries]]
        return entries


def client(url: str, max_connections: int = 100) -> Redis:
    """A Redis client: connecting is bounded, commands are bounded by their callers (readers
    block on purpose, so there is no socket timeout for all). It connects on first use."""
    return Redis.from_url(
        url, socket_connect_timeout=2, socket_keepalive=True, max_connections=max_connections
    )


def readers_client(url: str, readers: int) -> Redis:
    """The client of readers' blocking XREADs. Each waiting reader holds one of its connections,
    so its pool has room for `readers` of them: redis-py's default of 100 turned the 101st
    reader away (MaxConnectionsError), sending it to the database."""
    return client(url, readers)


def _events(
    entries: list[tuple[bytes, dict[bytes, bytes]]], sent: int
) -> tuple[bytes, int, str, bool]:
    """The events of stream entries for a reader that has `sent` characters: (their bytes, the
    characters then sent, the last entry's id, whether the end is among them). LogUnavailable
    when text is missing (trimmed by MAXLEN, or lost while Redis was away)."""
    out: list[bytes] = []
    last_id = ""
    for entry_id, fields in entries:
        last_id = entry_id.decode()
        number, _, sequence = last_id.partition("-")
        offset, start, event = int(number), int(fields[b"s"]), fields[b"e"]
        if start > sent or (sequence == "1" and offset != sent):
            raise LogUnavailable(sent)
        if sequence == "1":
            out.append(event)
            return b"".join(out), sent, last_id, True
        out.append(event if start == sent else rest_of(event, offset, offset - sent))
        sent = offset
    return b"".join(out), sent, last_id, False
