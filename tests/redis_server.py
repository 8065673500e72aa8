"""A throwaway Redis for the tests: Debian's `redis-server`, started on a free port.

Nothing is kept on disk (`--save '' --appendonly no`), so a server that is stopped and started
again (`stop()`, `start()`: "Redis went down") comes back empty, as a restarted cache does.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .service import free_port

START_SECONDS = 10.0


def redis_server_bin() -> str | None:
    """Where `redis-server` is (apt-get install redis-server), or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer:
    """One redis-server process on 127.0.0.1; `url` stays the same across `stop()`/`start()`."""

    def __init__(self, binary: str, password: str | None = None) -> None:
        self.binary = binary
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="quartchat-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it (again) and return once it answers PING."""
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "log"),
            *(("--requirepass", self.password) if self.password else ()),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_SECONDS
        while not self._answers():
            if self.process.poll() is not None:
                error = self.process.stderr.read() if self.process.stderr else b""
                raise RuntimeError(f"redis-server exited: {error.decode()[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {START_SECONDS} s")
            time.sleep(0.02)  # polling for a condition, with the deadline above
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to clients, as a crash or a network cut looks)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process is not None and process.stderr:
            process.stderr.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                # Without AUTH a password-protected server answers -NOAUTH: up, all the same.
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False
