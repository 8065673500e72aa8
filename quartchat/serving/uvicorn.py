"""uvicorn on uvloop and httptools (`SERVER=uvicorn`): its configuration, one process serving on
it, and its connection guard (serving/connections.py says what the guards are).

uvloop accepts in C (libuv), so hypercorn's guard in the listening socket's accept() cannot work
here: connections are counted in the protocol instead (`GuardedProtocol`). At the cap the
longest-idle connection is closed to make room, as on hypercorn; when every connection is busy
with a request, the newcomer is answered `503 SERVER_BUSY` (with Retry-After) and closed, where
hypercorn leaves it waiting in the listen backlog.
"""

from __future__ import annotations

import asyncio
import math
import socket
import uuid
from typing import cast

import orjson
import uvloop
from uvicorn import Config

from ..app import create_app
from ..config import Settings
from ..errors import APIError
from ..streaming.watch import LiveStreams
from .adapters import uvicorn as adapter
from .connections import (
    BACKLOG,
    DESCRIPTOR_RESERVE,
    HEAD_TIMEOUT_SECONDS,
    KEEP_ALIVE_SECONDS,
    ConnectionTable,
    ExhaustionLog,
    worker_cap,
)
from .drain import on_stop_signals

BUSY_RETRY_AFTER_SECONDS = 1
# How long a refused connection stays open to read the client's request before it is closed:
# closing with the request unread makes the kernel reset the connection, and the client may then
# see the reset instead of the 503.
BUSY_LINGER_SECONDS = 2.0
# Refused connections lingering at once; beyond it they are closed as soon as the 503 is written.
# They hold descriptors beyond the cap, from the reserve.
BUSY_LINGERING_MAX = DESCRIPTOR_RESERVE // 2
BUSY_OUTCOME = "new connections are answered 503 SERVER_BUSY"
# The most a request head may take before it is whole, as on hypercorn (h11's 16 KiB): httptools
# has no bound of its own, and the head timeout alone would let a head grow for 10 s.
HEAD_MAX_BYTES = 16 * 1024
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


def uvicorn_config(settings: Settings, app: object = None) -> Config:
    """uvicorn's configuration for `settings` (`app`: what it serves, once made)."""
    return Config(
        app,  # type: ignore[arg-type]
        host=settings.app_host.strip("[]"),
        port=settings.app_port,
        loop="none",  # run() makes uvloop's loop itself, in a worker too
        http=adapter.ServedProtocol,  # replaced per worker by serve(): GuardedProtocol
        ws="none",  # quartchat has no websocket route
        lifespan="on",  # Quart's while_serving: the shared clients, runs.close, the ledger's flush
        # quartchat writes its own structured line per request; uvicorn's own lines go through
        # the root handler once, in quartchat's format.
        access_log=False,
        log_config=None,
        # The client address is the socket's; TRUSTED_PROXIES decides what else to believe, in
        # one place (auth/principal.py). uvicorn's default believes X-Forwarded-For from 127.0.0.1.
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        backlog=BACKLOG,
        # After the grace period streams are told to stop; give them a moment to say so and close.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds + 3),
    )


def listen(settings: Settings) -> list[socket.socket]:
    """The listening socket, made once before the workers are forked."""
    return [uvicorn_config(settings).bind_socket()]


def run(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Serve on uvloop until stopped (with hypercorn asyncio's own loop costs less; here uvloop
    is what makes uvicorn the faster server: docs/benchmarks.md)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, sockets or listen(settings)))


async def serve(settings: Settings, sockets: list[socket.socket]) -> None:
    """Serve until SIGTERM/SIGINT, then drain (serving/drain.py)."""
    app = create_app(settings)
    streams: LiveStreams = app.extensions["streams"]
    config = uvicorn_config(settings, app)
    loop = asyncio.get_running_loop()
    exhaustion = ExhaustionLog(loop, outcome=BUSY_OUTCOME)
    loop.set_exception_handler(exhaustion)
    config.http = guarded_protocol(ConnectionTable(worker_cap(settings)), exhaustion)
    server = adapter.Server(config)
    on_stop_signals(streams, settings.shutdown_grace_seconds, server.stop)
    await server.serve(sockets=sockets)


def guarded_protocol(
    table: ConnectionTable[GuardedProtocol],
    exhaustion: ExhaustionLog,
    head_timeout: float = HEAD_TIMEOUT_SECONDS,
) -> type[GuardedProtocol]:
    """`GuardedProtocol` for one worker's `table` (uvicorn builds the protocol from a class)."""
    return type(
        "GuardedProtocol",
        (GuardedProtocol,),
        {"table": table, "exhaustion": exhaustion, "head_timeout": head_timeout},
    )


class GuardedProtocol(adapter.ServedProtocol):
    """uvicorn's connection, counted in its worker's table, with a deadline for each head."""

    table: ConnectionTable[GuardedProtocol]
    exhaustion: ExhaustionLog
    head_timeout: float
    lingering = 0  # refused connections still open, in this process

    _counted = False  # holds a place in the table
    _refused = False
    _head_bytes = 0  # received since the connection began waiting for a request head
    _head_timer: asyncio.TimerHandle | None = None
    _linger_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        table = self.table
        if table.open >= table.cap and not table.evict_oldest_idle():
            self._refuse(transport)
            return
        table.open += 1
        self._counted = True
        super().connection_made(transport)  # type: ignore[arg-type]
        table.waiting(self)
        self._await_head(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused and not self._counted:  # refused at connection_made: not uvicorn's
            self._end_refusal()
            return
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._stop_head_timer()
        self.table.busy(self)  # out of the idle order
        self._release()
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._stop_head_timer()
        self.table.busy(self)  # a request in flight: never closed to make room

    def response_finished(self) -> None:
        self.table.waiting(self)
        self._await_head(self.config.timeout_keep_alive)

    def evict(self) -> None:
        """Close now, to make room for a new connection (only ever done to an idle one)."""
        self._stop_head_timer()
        self._release()  # uvloop closes the descriptor within abort()
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self._refused:  # a refused connection's request is read and dropped
            return
        awaiting_head = self._head_timer is not None
        super().data_received(data)
        if awaiting_head and self._head_timer is not None:  # still no whole head
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_MAX_BYTES and not self.transport.is_closing():
                self._refused = True  # what else comes is read and dropped, as for a refusal
                self._stop_head_timer()
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.write_eof()
                self._linger_timer = self.loop.call_later(BUSY_LINGER_SECONDS, self.transport.close)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self.table.open -= 1

    def _await_head(self, timeout: float) -> None:
        """The next request head must arrive within `timeout` (bytes of one do not count)."""
        self._stop_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(timeout, self._no_head_in_time)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _no_head_in_time(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Answer 503 SERVER_BUSY and close: every connection the worker may hold is busy."""
        transport = cast(asyncio.Transport, transport)  # uvloop's, not asyncio's subclass
        self._refused = True
        self.transport = transport
        self.exhaustion.report(
            "a new connection found no room", f"all {self.table.cap} client connections are busy"
        )
        transport.write(busy_response())
        cls = type(self)
        if cls.lingering >= BUSY_LINGERING_MAX or not transport.can_write_eof():
            transport.close()  # sends what was written first
            return
        cls.lingering += 1
        transport.write_eof()
        self._linger_timer = self.loop.call_later(BUSY_LINGER_SECONDS, transport.close)

    def _end_refusal(self) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            type(self).lingering -= 1


def busy_response() -> bytes:
    """The whole HTTP response to a connection refused for want of room: `503 SERVER_BUSY`."""
    request_id = uuid.uuid4().hex
    error = APIError(
        503,
        "SERVER_BUSY",
        "Every connection this server may hold is busy with a request; try again shortly.",
    )
    body = orjson.dumps(error.payload(request_id))
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"retry-after: {BUSY_RETRY_AFTER_SECONDS}\r\n"
        f"x-request-id: {request_id}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body
