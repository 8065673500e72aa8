"""hypercorn (the default server): its configuration, one process serving on it, and its
connection guard (serving/connections.py says what the guards are).

hypercorn serves on asyncio's streams, so the guard sits where asyncio accepts: a listening
socket whose accept() refuses once the table is full (`_Listener`), and hypercorn's connection
class subclassed (`GuardedConnection`, through adapters/hypercorn.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import select
import socket
from contextlib import suppress
from functools import partial
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config, Sockets
from hypercorn.events import Event, Updated
from hypercorn.typing import AppWrapper, LifespanState
from hypercorn.utils import wrap_app

from ..app import create_app
from ..config import Settings
from ..streaming.watch import LiveStreams
from .adapters import hypercorn as adapter
from .connections import (
    BACKLOG,
    EXHAUSTION_ERRNOS,
    HEAD_TIMEOUT_SECONDS,
    KEEP_ALIVE_SECONDS,
    ConnectionTable,
    ExhaustionLog,
    worker_cap,
)
from .drain import on_stop_signals


def hypercorn_config(settings: Settings) -> Config:
    """hypercorn's configuration for `settings`."""
    config = Config()
    config.bind = [f"{settings.app_host}:{settings.app_port}"]
    config.accesslog = None  # quartchat writes its own structured line per request
    # A logger rather than "-": its lines go through the root handler once, in quartchat's format
    # (hypercorn's own stderr handler printed each of them twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = KEEP_ALIVE_SECONDS
    config.backlog = BACKLOG
    # After the grace period streams are told to stop; give them a moment to say so and close.
    config.graceful_timeout = settings.shutdown_grace_seconds + 3
    return config


async def serve(settings: Settings, config: Config, sockets: Sockets | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain (serving/drain.py)."""
    app = create_app(settings)
    streams: LiveStreams = app.extensions["streams"]
    stop = asyncio.Event()
    on_stop_signals(streams, settings.shutdown_grace_seconds, stop.set)

    # Closes connections their clients closed, caps them below the descriptor limit.
    sockets = guard_connections(config, sockets, cap=worker_cap(settings))
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, mode="asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=stop.wait,
    )


def run(settings: Settings, sockets: Sockets | None = None) -> None:
    """Serve on asyncio's own event loop until stopped.

    Not uvloop: with hypercorn's stream-based server uvloop measured ~20% more CPU per relayed
    chunk and fell behind at 500 streams (docs/benchmarks.md).
    """
    asyncio.run(serve(settings, hypercorn_config(settings), sockets))


def listen(settings: Settings) -> Sockets:
    """The listening sockets, made once before the workers are forked."""
    return hypercorn_config(settings).create_sockets()


class AcceptingTable(ConnectionTable["GuardedConnection"]):
    """The table, kept where asyncio accepts: in the listening socket's accept()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        super().__init__(cap)
        self._served = 0  # of the open ones, those hypercorn serves; the rest are on their way
        self._loop = loop
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
        if self.evict_oldest_idle():
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
        """`sock`, just accepted, counted until its descriptor is closed."""
        counted = _CountedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        counted.table = self
        self.open += 1
        return counted

    def started(self, connection: GuardedConnection) -> None:
        """hypercorn serves `connection` now."""
        self._served += 1
        self.waiting(connection)

    def finished(self, connection: GuardedConnection) -> None:
        """hypercorn is done with `connection`."""
        self._served -= 1
        self._idle.pop(connection, None)


class _Listener(socket.socket):
    """A listening socket that accepts only the client connections its table has room for."""

    table: AcceptingTable

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

    table: AcceptingTable | None = None

    def close(self) -> None:
        table, self.table = self.table, None
        super().close()
        if table is not None:
            table.open -= 1


def _connection_waiting(listener: socket.socket) -> bool:
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return bool(poller.poll(0))


def capped(sock: socket.socket, table: AcceptingTable) -> socket.socket:
    """`sock`, a listening socket, as one that accepts no more connections than `table` allows."""
    listener = _Listener(sock.family, sock.type, sock.proto, fileno=sock.detach())
    listener.table = table
    return listener


class GuardedConnection(adapter.ServedConnection):
    """hypercorn's connection, closed as soon as its client closes it, and known to its table."""

    def __init__(
        self,
        table: AcceptingTable,
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


def guard_connections(
    config: Config,
    sockets: Sockets | None,
    *,
    cap: int,
    head_timeout: float = HEAD_TIMEOUT_SECONDS,
) -> Sockets:
    """Guard this worker's client connections; return the sockets for `worker_serve` to use.

    Call it on the serving loop, once per process, before `worker_serve`: it makes hypercorn
    build each connection as a `GuardedConnection`, installs `ExhaustionLog`, and caps the
    listening sockets (`config`'s own when `sockets` is None) at `cap` connections.
    """
    loop = asyncio.get_running_loop()
    table = AcceptingTable(loop, cap)
    adapter.use_connection_class(partial(GuardedConnection, table, head_timeout))
    loop.set_exception_handler(ExhaustionLog(loop))
    sockets = sockets or config.create_sockets()
    return Sockets(
        secure_sockets=[capped(s, table) for s in sockets.secure_sockets],
        insecure_sockets=[capped(s, table) for s in sockets.insecure_sockets],
        quic_sockets=sockets.quic_sockets,
    )
