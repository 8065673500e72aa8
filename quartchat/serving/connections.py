"""Client connections: closed as soon as their client closes them, and never more than fit.

Three guards between a crowd of clients and a process that has run out of file descriptors (see
docs/deploy.md, "Connections and file descriptors"):

- hypercorn 0.18.0 keeps a connection its client has closed open (in CLOSE-WAIT) until the
  keep-alive timer fires, 75 s here; `GuardedConnection` closes it at once
  (docs/upstream/hypercorn-close-wait.md).
- each worker holds at most `connection_cap()` client connections, below its descriptor limit, so
  accept() never fails for want of one. At the cap the connection that has waited longest for a
  request is closed to make room: a slowloris crowd of idle connections cannot lock out
  `/health` or anyone else. Only when every connection is busy with a request do new ones wait
  in the listen backlog.
- asyncio logs a traceback for each failed accept(), thousands a second; `ExhaustionLog` says it
  once per interval.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import select
import socket
from contextlib import suppress
from functools import partial
from typing import Any

from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config, Sockets
from hypercorn.events import Event, Updated
from hypercorn.typing import AppWrapper, LifespanState

from ..db import POOL_SIZE
from .adapters import hypercorn

log = logging.getLogger("quartchat.connections")

# Descriptors kept back from client and upstream connections: the listening socket, the event
# loop's own, log output, static files being sent, DNS look-ups.
DESCRIPTOR_RESERVE = 64
# The longest a new connection may take to send its first request head. Later heads on a
# keep-alive connection get hypercorn's keep-alive timeout, counted from the previous response.
HEAD_TIMEOUT_SECONDS = 10.0
EXHAUSTION_LOG_SECONDS = 10.0
# The database pool's connections and SQLite's writer (db/writer.py): an SQLite connection holds
# three (the file, its WAL, its shared-memory index), a PostgreSQL one a socket.
DATABASE_DESCRIPTORS = 3 * (POOL_SIZE + 1)
# What asyncio's accept loop calls "out of system resource" (selector_events._accept_connection).
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_descriptor_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (`guard_connections` logs it).

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


class ConnectionTable:
    """One worker's client connections: how many descriptors they hold, which ones are idle."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        self.cap = cap
        self.open = 0  # accepted sockets not closed yet
        self._served = 0  # of those, the ones hypercorn serves; the rest are on their way to it
        self._loop = loop
        # Connections waiting for a request head, the longest-waiting first (dicts keep order).
        self._idle: dict[GuardedConnection, None] = {}
        self._paused = False

    def before_accept(self, listener: socket.socket) -> None:
        """Make room for one more connection, or raise to say accept() must wait."""
        if self._paused:
            raise BlockingIOError  # ends asyncio's accept loop; it resumes in a second (see pause)
        if self.open < self.cap:
            return
        if not _connection_waiting(listener):
            # asyncio calls accept() until it fails: nobody waiting, no one to make room for.
            raise BlockingIOError
        if self._idle:
            oldest = next(iter(self._idle))
            del self._idle[oldest]
            oldest.evict()
            # asyncio closes that socket first thing in its next loop iteration, and the listening
            # socket, still readable, brings accept() back right after: no waiting.
            raise BlockingIOError
        if self.open > self._served:
            # Connections accepted a moment ago are not served yet, and any of them may turn out
            # idle: look again on the next loop iteration rather than stop for a second.
            raise BlockingIOError
        self.pause()
        raise OSError(errno.EMFILE, f"all {self.cap} client connections are busy")

    def pause(self) -> None:
        """Say "no more" to the rest of asyncio's current accept loop.

        On an exhaustion error asyncio stops watching the listening socket for a second, but its
        loop still calls accept() up to `backlog` (4096) times more, logging each failure and
        scheduling one more restart for each (CPython gh-151615): the rest of the loop gets
        BlockingIOError instead. (A listening socket closed at shutdown within that second makes
        asyncio's restart log a ValueError, as after a real EMFILE: harmless.)
        """
        self._paused = True
        self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        self._paused = False

    def accepted(self, sock: socket.socket) -> socket.socket:
        counted = _CountedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        counted.table = self
        self.open += 1
        return counted

    def started(self, connection: GuardedConnection) -> None:
        self._served += 1
        self.waiting(connection)

    def waiting(self, connection: GuardedConnection) -> None:
        self._idle.pop(connection, None)
        self._idle[connection] = None

    def busy(self, connection: GuardedConnection) -> None:
        self._idle.pop(connection, None)

    def finished(self, connection: GuardedConnection) -> None:
        self._served -= 1
        self._idle.pop(connection, None)


class _Listener(socket.socket):
    """A listening socket that accepts only the client connections its table has room for."""

    table: ConnectionTable

    def accept(self) -> tuple[socket.socket, Any]:
        self.table.before_accept(self)
        try:
            sock, address = super().accept()
        except OSError as error:
            if error.errno in EXHAUSTION_ERRNOS:
                self.table.pause()
            raise
        return self.table.accepted(sock), address


class _CountedSocket(socket.socket):
    """An accepted client socket that tells its table when its descriptor is closed."""

    table: ConnectionTable | None = None

    def close(self) -> None:
        table, self.table = self.table, None
        super().close()
        if table is not None:
            table.open -= 1


def _connection_waiting(listener: socket.socket) -> bool:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


def capped(sock: socket.socket, table: ConnectionTable) -> socket.socket:
    """`sock`, a listening socket, as one that accepts no more connections than `table` allows."""
    listener = _Listener(sock.family, sock.type, sock.proto, fileno=sock.detach())
    listener.table = table
    return listener


class GuardedConnection(hypercorn.ServedConnection):
    """hypercorn's connection, closed as soon as its client closes it, and known to its table."""

    def __init__(
        self,
        table: ConnectionTable,
        head_timeout: float,
        app: AppWrapper,
        loop: asyncio.AbstractEventLoop,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(app, loop, config, context, state, reader, writer)
        self._table = table
        self._head_timeout = head_timeout
        self._answered = False  # a response has gone out: the next head gets the keep-alive time

    async def run(self) -> None:
        self._table.started(self)
        try:
            await super().run()
        finally:
            self._table.finished(self)

    def evict(self) -> None:
        """Close now, to make room for a new connection (only ever done to an idle one)."""
        self.abort()

    async def client_closed(self) -> None:
        # No request can follow. hypercorn 0.18.0 leaves the keep-alive timer running in the
        # connection's task group, and that group must finish before the socket is closed, so
        # the socket sat in CLOSE-WAIT for the whole keep-alive timeout
        # (docs/upstream/hypercorn-close-wait.md).
        await self.stop_idle_timer()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated):
            if event.idle:
                self._answered = True
                self._table.waiting(self)
            else:
                self._table.busy(self)  # a request in flight: never closed to make room
        await super().protocol_send(event)

    async def idle_timeout(self) -> None:
        # hypercorn's own, but a new connection waits HEAD_TIMEOUT for its first request rather
        # than the whole keep-alive timeout: that time is for proxies between requests.
        timeout = self.config.keep_alive_timeout if self._answered else self._head_timeout
        with suppress(TimeoutError):
            await asyncio.wait_for(self.context.terminated.wait(), timeout)
        await self.close_idle()


class ExhaustionLog:
    """A loop exception handler that reports running out of descriptors once per interval.

    asyncio reports each failed accept() with a traceback; a crowd of connections made that
    hundreds of thousands of lines a minute. Any other report goes to the previous handler.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, interval: float = EXHAUSTION_LOG_SECONDS
    ) -> None:
        self._loop = loop
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
        if self._window is not None:
            self._repeats += 1
            return
        log.warning(
            "%s (%s): new connections wait in the listen backlog; repeats are counted for %g s",
            context.get("message", "out of system resource"),
            error,
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


def guard_connections(
    config: Config,
    sockets: Sockets | None,
    *,
    upstream_connections: int,
    head_timeout: float = HEAD_TIMEOUT_SECONDS,
) -> Sockets:
    """Guard this worker's client connections; return the sockets for `worker_serve` to use.

    Call it on the serving loop, once per process, before `worker_serve`: it makes hypercorn
    build each connection as a `GuardedConnection`, installs `ExhaustionLog`, and caps the
    listening sockets (`config`'s own when `sockets` is None) at `connection_cap()`.
    """
    loop = asyncio.get_running_loop()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    table = ConnectionTable(loop, connection_cap(soft, upstream_connections))
    hypercorn.use_connection_class(partial(GuardedConnection, table, head_timeout))
    loop.set_exception_handler(ExhaustionLog(loop))
    log.info("descriptor limit %d (hard %d): at most %d client connections", soft, hard, table.cap)
    sockets = sockets or config.create_sockets()
    return Sockets(
        secure_sockets=[capped(s, table) for s in sockets.secure_sockets],
        insecure_sockets=[capped(s, table) for s in sockets.insecure_sockets],
        quic_sockets=sockets.quic_sockets,
    )
