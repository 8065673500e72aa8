"""`APP_WORKERS` processes forked onto one set of listening sockets, whichever the server."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import multiprocess

from ..config import Settings
from .drain import STOP_SIGNALS

Sockets = TypeVar("Sockets")


def serve_workers(
    settings: Settings, serve: Callable[[Settings, Sockets], None], sockets: Sockets
) -> int:
    """Fork `APP_WORKERS` processes, each running `serve(settings, sockets)` on the listening
    `sockets` made before the fork; pass stop signals on to them; return the exit status for
    the whole service.

    If a worker dies on its own, the others are stopped too and the exit status says so, so that
    the supervisor (Docker's restart policy, systemd) restarts the whole service.
    """
    children: set[int] = set()
    for _ in range(settings.app_workers):
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            status = 0
            try:
                serve(settings, sockets)
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
        directory = settings.prometheus_multiproc_dir
        if directory is not None:  # its requests in flight are in flight no more
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        if not stopping:  # a worker died by itself: stop the rest
            status = 1
            forward(signal.SIGTERM, None)
        elif os.waitstatus_to_exitcode(wait_status) != 0:
            status = 1
    return status
