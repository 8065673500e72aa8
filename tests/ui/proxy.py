"""A TCP proxy between a browser and the service that a test can cut, for real.

Playwright's `set_offline` only fails new requests: a stream already open goes on. This proxy
relays bytes both ways and, on `cut()`, closes every connection it holds on both sides at once
(the browser sees its response end mid-body, the service sees its client gone), as a dropped
Wi-Fi or a restarted load balancer does. While it is `down` it closes new connections as soon as
they come, so a test can look at the page while it cannot reach the service; `up()` lets them
through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableProxy:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target` until closed."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._closed = False
        self.cuts = 0  # connections closed by cut()
        self._thread = threading.Thread(target=self._accept, name="cuttable-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> int:
        """Close every open connection, both sides, and refuse new ones until `up()`; answers how
        many connections were cut."""
        with self._lock:
            self._down = True
            cut = list(self._open)
            self._open.clear()
        for sock in cut:
            _close(sock)
        self.cuts += len(cut) // 2
        return len(cut) // 2

    def up(self) -> None:
        """Let connections through again."""
        with self._lock:
            self._down = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            cut = list(self._open)
            self._open.clear()
        _close(self._listener)
        for sock in cut:
            _close(sock)
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                refuse = self._down or self._closed
            if refuse:
                _close(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # cut, or the other side went away
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
