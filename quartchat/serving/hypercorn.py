"""hypercorn (the default server): its configuration, and one process serving on it."""

from __future__ import annotations

import asyncio
import logging

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app

from ..app import create_app
from ..config import Settings
from ..streaming.watch import LiveStreams
from .connections import DATABASE_DESCRIPTORS, guard_connections
from .drain import on_stop_signals


def hypercorn_config(settings: Settings) -> Config:
    """hypercorn's configuration for `settings`."""
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
    """Serve until SIGTERM/SIGINT, then drain (serving/drain.py)."""
    app = create_app(settings)
    streams: LiveStreams = app.extensions["streams"]
    stop = asyncio.Event()
    on_stop_signals(streams, settings.shutdown_grace_seconds, stop.set)

    # Closes connections their clients closed, caps them below the descriptor limit.
    sockets = guard_connections(
        config,
        sockets,
        upstream_connections=settings.upstream_max_connections + DATABASE_DESCRIPTORS,
    )
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
