"""Stop signals: the first drains the streams in flight, a second ends them now.

Both servers take their signals here, so SIGTERM means the same on each: the listening socket
closes and new chats are refused (503 `SERVER_SHUTTING_DOWN`), while streams in flight may finish
for up to SHUTDOWN_GRACE_SECONDS; any still running then end with an `error` event
(SERVER_SHUTTING_DOWN) instead of a silent cut. A second signal ends them at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from ..streaming.watch import LiveStreams

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(streams: LiveStreams, grace: float, stop_serving: Callable[[], None]) -> None:
    """On the running loop: the first stop signal drains `streams` for `grace` seconds and calls
    `stop_serving` (the server then closes its listening sockets and waits for its connections);
    any later one ends the streams still running."""
    signalled = False

    def on_signal() -> None:
        nonlocal signalled
        if signalled:
            streams.stop_all()
            return
        signalled = True
        streams.drain(grace)
        stop_serving()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)
