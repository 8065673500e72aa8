"""Client connections: closed as soon as their client closes them, and never more than fit.

Three guards between a crowd of clients and a process that has run out of file descriptors (see
docs/deploy.md, "Connections and file descriptors"), the same on each server; how each server
applies them is in its module (hypercorn.py, uvicorn.py):

- a connection whose client has closed it is closed at once (hypercorn 0.18.0 kept it in
  CLOSE-WAIT until its keep-alive timer fired, 75 s here: docs/upstream/hypercorn-close-wait.md).
- each worker holds at most `connection_cap()` client connections, below its descriptor limit, so
  accept() never fails for want of one. At the cap the connection that has waited longest for a
  request is closed to make room (`ConnectionTable`): a slowloris crowd of idle connections
  cannot lock out `/health` or anyone else. When every connection is busy with a request, a new
  one waits in the listen backlog on hypercorn, and is answered `503 SERVER_BUSY` on uvicorn.
- a new connection's first request head must arrive within `HEAD_TIMEOUT_SECONDS`; later ones
  within the keep-alive timeout.
- running out anyway is logged once per interval (`ExhaustionLog`), not once per accept().
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from contextlib import suppress
from typing import Any, Generic, Protocol, TypeVar

from ..config import Settings
from ..db import POOL_SIZE

log = logging.getLogger("quartchat.connections")

# Descriptors kept back from client and upstream connections: the listening socket, the event
# loop's own, log output, static files being sent, DNS look-ups.
DESCRIPTOR_RESERVE = 64
# The longest a new connection may take to send its first request head. Later heads on a
# keep-alive connection get the keep-alive timeout, counted from the previous response.
HEAD_TIMEOUT_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 75  # longer than typical reverse-proxy idle pools (nginx: 60 s)
# hypercorn's default of 100 drops SYNs when hundreds of clients connect at once (each drop is a
# 1 s+ retransmit for that client); the kernel caps it at net.core.somaxconn.
BACKLOG = 4096
EXHAUSTION_LOG_SECONDS = 10.0
# The database pool's connections and SQLite's writer (db/writer.py): an SQLite connection holds
# three (the file, its WAL, its shared-memory index), a PostgreSQL one a socket.
DATABASE_DESCRIPTORS = 3 * (POOL_SIZE + 1)
# What asyncio's accept loop calls "out of system resource" (selector_events._accept_connection).
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_descriptor_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (`worker_cap` logs it).

    The soft limit is often 1024 while the hard one is far higher, and every client connection,
    upstream connection and open file takes a descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # An unlimited hard limit cannot be the soft one (macOS): keep what there is then.
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connection_cap(descriptor_limit: int, upstream_connections: int) -> int:
    """The most client connections one worker may hold within `descriptor_limit` descriptors.

    Client connections get what is left after the reserve and a full upstream pool, and never
    less than half of what is left after the reserve: a request uses at most one upstream
    connection, so a pool larger than that half can only fill up with as many upstream
    connections as there are client connections, and two descriptors each still fit.
    """
    if descriptor_limit == resource.RLIM_INFINITY:
        descriptor_limit = 1 << 20  # Linux's own ceiling (fs.nr_open) by default
    usable = descriptor_limit - DESCRIPTOR_RESERVE
    return max(usable - upstream_connections, usable // 2, 1)


def worker_cap(settings: Settings) -> int:
    """This worker's `connection_cap()` under its descriptor limit, said once in the log."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    upstream = settings.upstream_max_connections + DATABASE_DESCRIPTORS
    cap = connection_cap(soft, upstream)
    log.info("descriptor limit %d (hard %d): at most %d client connections", soft, hard, cap)
    return cap


class Evictable(Protocol):
    def evict(self) -> None:
        """Close now, to make room for a new connection (only ever done to an idle one)."""


C = TypeVar("C", bound=Evictable)


class ConnectionTable(Generic[C]):
    """One worker's client connections: how many descriptors they hold, which ones are idle."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0  # accepted sockets not closed yet
        # Connections waiting for a request head, the longest-waiting first (dicts keep order).
        self._idle: dict[C, None] = {}

    def waiting(self, connection: C) -> None:
        """`connection` waits for a request head (again): it may be closed to make room."""
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def busy(self, connection: C) -> None:
        """A request is in flight on `connection`: never closed to make room."""
        self._idle.pop(connection, None)

    def evict_oldest_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        if not self._idle:
            return False
        oldest = next(iter(self._idle))
        del self._idle[oldest]
        oldest.evict()
        return True


class ExhaustionLog:
    """A loop exception handler that reports running out of descriptors once per interval.

    asyncio reports each failed accept() with a traceback; a crowd of connections made that
    hundreds of thousands of lines a minute. Any other report goes to the previous handler.
    `outcome` says what becomes of the connections that find no room.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float = EXHAUSTION_LOG_SECONDS,
        outcome: str = "new connections wait in the listen backlog",
    ) -> None:
        self._loop = loop
        self._outcome = outcome
        self._interval = interval
        self._previous = loop.get_exception_handler()
        self._repeats = 0
        self._window: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not (isinstance(error, OSError) and error.errno in EXHAUSTION_ERRNOS):
            if self._previous is None:
                loop.default_exception_handler(context)
            else:
                self._previous(loop, context)
            return
        self.report(context.get("message", "out of system resource"), str(error))

    def report(self, what: str, detail: str) -> None:
        """Say that connections found no room: the first time in an interval, else count it."""
        if self._window is not None:
            self._repeats += 1
            return
        log.warning(
            "%s (%s): %s; repeats are counted for %g s",
            what,
            detail,
            self._outcome,
            self._interval,
        )
        self._window = self._loop.call_later(self._interval, self._end_window)

    def _end_window(self) -> None:
        self._window = None
        if self._repeats:
            log.warning(
                "out of system resource %d more times in %g s", self._repeats, self._interval
            )
            self._repeats = 0
            self._window = self._loop.call_later(self._interval, self._end_window)
