"""hypercorn's private names (hypercorn 0.18.0, pinned in requirements.txt).

quartchat/serving/connections.py guards each client connection; hypercorn has no hook for it, so:
- `hypercorn.asyncio.tcp_server.TCPServer`, its connection class (not public API), built by
  `hypercorn.asyncio.run.worker_serve` as `TCPServer(app, loop, config, context,
  lifespan_state, reader, writer)` through the name `TCPServer` in that module, the one place a
  subclass can be put in (`use_connection_class`);
- on it: `run()`, `protocol_send(event)`, `_read_data()` (returns when the client has closed
  its side), `_idle_timeout()` (the keep-alive timer's task, armed by `run()` through
  `idle_task.restart` before it reads), `idle_task` (that timer), `_initiate_server_close()`, and
  the attributes `config`, `context` and `writer`.

`ServedConnection` renames the underscored ones to hooks of its own; subclass it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio import run as hypercorn_run
from hypercorn.asyncio.tcp_server import TCPServer


class ServedConnection(TCPServer):
    """hypercorn's client connection, with hooks for the private steps a subclass changes."""

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.client_closed()

    async def client_closed(self) -> None:
        """Called once the client has closed its side (or the connection broke)."""

    async def stop_idle_timer(self) -> None:
        """Stop the keep-alive timer (hypercorn leaves it running after the client closed)."""
        await self.idle_task.stop()

    async def _idle_timeout(self) -> None:
        await self.idle_timeout()

    async def idle_timeout(self) -> None:
        """The keep-alive timer's task: hypercorn's own waits `keep_alive_timeout`, then closes."""
        await super()._idle_timeout()

    async def close_idle(self) -> None:
        """Close the connection, as hypercorn's keep-alive timeout does."""
        await asyncio.shield(self._initiate_server_close())

    def abort(self) -> None:
        """Drop the socket now, without a goodbye."""
        self.writer.transport.abort()


def use_connection_class(factory: Callable[..., Any]) -> None:
    """Make hypercorn's workers (started after this, in this process) build each client
    connection as `factory(app, loop, config, context, state, reader, writer)`."""
    hypercorn_run.TCPServer = factory  # type: ignore[attr-defined,assignment]
