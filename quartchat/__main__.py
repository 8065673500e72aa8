"""`python -m quartchat` / `quartchat`: serve the app with hypercorn on APP_HOST:APP_PORT.

Use this rather than the `hypercorn` command in production: it drains streams on SIGTERM (see
`serve()`), and runs `APP_WORKERS` processes on one listening socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from .app import create_app
from .config import Settings, get_settings
from .connections import guard_connections, raise_descriptor_limit
from .streaming.watch import LiveStreams

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.app_host}:{settings.app_port}"]
    config.accesslog = None  # quartchat writes its own structured line per request
    # A logger rather than "-": its lines go through the root handler once, in quartchat's format
    # (hypercorn's own stderr handler printed each of them twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # longer than typical reverse-proxy idle pools (nginx: 60 s)
    # hypercorn's default of 100 drops SYNs when hundreds of clients connect at once (each drop
    # is a 1 s+ retransmit for that client); the kernel caps it at net.core.somaxconn.
    config.backlog = 4096
    # After the grace period streams are told to stop; give them a moment to say so and close.
    config.graceful_timeout = settings.shutdown_grace_seconds + 3
    return config


async def serve(settings: Settings, config: Config, sockets: Sockets | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain.

    On the first signal the listening socket closes and new chats are refused, while streams in
    flight may finish for up to SHUTDOWN_GRACE_SECONDS; any still running then end with an
    `error` event (SERVER_SHUTTING_DOWN) instead of a silent cut. A second signal ends them now.
    """
    app = create_app(settings)
    streams: LiveStreams = app.extensions["streams"]
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            streams.stop_all()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)

    async def shutdown_trigger() -> None:
        await stop.wait()
        streams.drain(settings.shutdown_grace_seconds)

    # Closes connections their clients closed, caps them below the descriptor limit.
    sockets = guard_connections(
        config, sockets, upstream_connections=settings.upstream_max_connections
    )
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, mode="asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=shutdown_trigger,
    )


def _serve_workers(settings: Settings, config: Config) -> int:
    """Fork `APP_WORKERS` processes onto one listening socket; pass stop signals on to them.

    If a worker dies on its own, the others are stopped too and the exit status says so, so that
    the supervisor (Docker's restart policy, systemd) restarts the whole service.
    """
    sockets = config.create_sockets()
    children: set[int] = set()
    for _ in range(settings.app_workers):
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            status = 0
            try:
                asyncio.run(serve(settings, config, sockets))
            except BaseException:
                status = 1
                raise
            finally:
                os._exit(status)
        children.add(pid)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.discard(pid)
        if not stopping:  # a worker died by itself: stop the rest
            status = 1
            forward(signal.SIGTERM, None)
        elif os.waitstatus_to_exitcode(wait_status) != 0:
            status = 1
    return status


def main() -> None:
    # asyncio's own event loop, not uvloop: with hypercorn's stream-based server uvloop measured
    # ~20% more CPU per relayed chunk and fell behind at 500 streams (docs/benchmarks.md).
    settings = get_settings()
    raise_descriptor_limit()  # before any socket opens; workers inherit it
    config = hypercorn_config(settings)
    if settings.app_workers == 1:
        asyncio.run(serve(settings, config))
        return
    sys.exit(_serve_workers(settings, config))


if __name__ == "__main__":
    main()
