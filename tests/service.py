"""Run the real service (`python -m quartchat`) in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def eventually(condition: Callable[[], bool], timeout: float = 2) -> bool:
    """Whether `condition()` comes true within `timeout` seconds (asked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The service as `quartchat` runs it; without accounts unless `AUTH_MODE=accounts` is given
    (its data then goes to a temporary DATA_DIR, unless one is given); on the server `SERVER`
    names (given, or this process's environment's; quartchat's default otherwise)."""

    def __init__(self, upstream_url: str, **env: str) -> None:
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="quartchat-data-"))
        self.env = {
            **os.environ,
            "OPENAI_API_BASE": upstream_url,
            "OPENAI_API_KEY": "sk-e2e-test-key-0000000000",
            "APP_HOST": "127.0.0.1",
            "APP_PORT": str(self.port),
            "AUTH_MODE": "none",
            "DATA_DIR": str(self.data_dir),
            # As make_settings does: a default that is not the fake's first listed model.
            "OPENAI_MODEL": "gpt-4o-mini",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / "artifacts" / f"service-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.log_path.parent.mkdir(exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "quartchat"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_path.read_text()}")
            try:
                health = httpx.get(self.url + "/health", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            if health.status_code == 200:
                self._check_server(health.headers.get("server", ""))
                return self
        raise RuntimeError("service did not become healthy")

    def _check_server(self, named: str) -> None:
        # A test parametrised over the servers proves nothing about uvicorn if the service ran
        # on hypercorn anyway: the Server header (hypercorn-h11, uvicorn) says which one answers.
        wanted = self.env.get("SERVER") or "hypercorn"
        if not named.startswith(wanted):
            self.stop()
            raise RuntimeError(f"asked for SERVER={wanted}, served by {named!r}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
