"""uvicorn's private names (uvicorn 0.55.0 with httptools 0.9.0, pinned in requirements.txt).

quartchat/serving/uvicorn.py guards each client connection and takes the stop signals itself;
uvicorn has a hook for neither, so:
- `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`, its HTTP/1.1 connection (passing a
  class as `Config(http=…)` is public; what a subclass may override is not): it is built as
  `cls(config=, server_state=, app_state=, _loop=)`; `connection_made()` registers it in
  `server_state.connections` (what `Server.shutdown` waits for) and sets `transport`;
  `connection_lost()` unregisters it; `on_headers_complete()` (httptools' callback) starts a
  request; `on_response_complete()` runs when a response has gone out (and starts a pipelined
  request, if one came meanwhile: `cycle`, the latest request, then has `response_complete`
  False), and returns early when the transport is closing; `eof_received()` returns None, so asyncio closes the connection as
  soon as its client closes its side (no CLOSE-WAIT).
- `uvicorn.Server.capture_signals()`, the context manager `serve()` enters to install its own
  SIGINT/SIGTERM handlers (and to raise the caught signal again once served, which would end
  the process by that signal rather than with status 0), and `should_exit`, the flag its main
  loop polls every 0.1 s to begin its shutdown.

`ServedProtocol` and `Server` rename these to hooks of their own; subclass or call those.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ServedProtocol(HttpToolsProtocol):
    """uvicorn's httptools connection, with hooks for the steps a subclass adds to."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.request_started()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Not when closing, nor when it started a pipelined request that came in meanwhile.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self.response_finished()

    def request_started(self) -> None:
        """A request's head has arrived; its response is on its way."""

    def response_finished(self) -> None:
        """A response has gone out and the connection stays open for the next request."""

    def abort(self) -> None:
        """Drop the socket now, without a goodbye."""
        self.transport.abort()


class Server(uvicorn.Server):
    """uvicorn's Server without its signal handlers: whoever runs it calls `stop()`."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """Begin the shutdown: close the listening sockets, wait for the connections (up to
        `timeout_graceful_shutdown`), then the app's lifespan shutdown."""
        self.should_exit = True
