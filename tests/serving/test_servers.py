"""What quartchat promises on every server (SERVER): the body cap, the client's address, the log;
and the choice of server itself."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from ..auth.conftest import PASSWORD
from ..conftest import CHAT, SERVERS, assert_error
from ..fake_upstream import FakeUpstream
from ..service import ROOT, Service

pytestmark = pytest.mark.e2e

MAX_BODY = 4096
ADMIN = {"email": "admin@example.com", "password": PASSWORD}


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def small_bodies(fake: FakeUpstream, server: str) -> Iterator[Service]:
    with Service(fake.url, SERVER=server, MAX_BODY_BYTES=str(MAX_BODY)) as service:
        yield service


def chat_of_size(size: int) -> bytes:
    empty = orjson.dumps({"messages": [{"role": "user", "content": ""}]})
    return orjson.dumps({"messages": [{"role": "user", "content": "x" * (size - len(empty))}]})


def test_a_body_over_max_body_bytes_is_refused_413(small_bodies: Service) -> None:
    response = httpx.post(
        small_bodies.url + "/api/chat",
        content=chat_of_size(MAX_BODY + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_error(response.status_code, response.content, 413, "REQUEST_TOO_LARGE")


def test_a_chunked_body_over_max_body_bytes_is_refused_413(small_bodies: Service) -> None:
    body = chat_of_size(4 * MAX_BODY)
    pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))  # no Content-Length
    response = httpx.post(
        small_bodies.url + "/api/chat", content=pieces, headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response.status_code, response.content, 413, "REQUEST_TOO_LARGE")


def test_a_body_at_max_body_bytes_is_served(small_bodies: Service) -> None:
    response = httpx.post(
        small_bodies.url + "/api/chat",
        content=chat_of_size(MAX_BODY),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_x_forwarded_for_from_loopback_is_not_believed_without_trusted_proxies(
    fake: FakeUpstream, server: str
) -> None:
    # Login attempts are counted per client address: were each X-Forwarded-For believed (as
    # uvicorn's proxy_headers does from 127.0.0.1 by default), each would count on its own.
    env = {
        "SERVER": server,
        "AUTH_MODE": "accounts",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "LOGIN_ATTEMPTS_PER_MINUTE": "2",
        "TRUSTED_PROXIES": "",
    }
    with Service(fake.url, **env) as service:
        statuses = [
            httpx.post(
                service.url + "/api/auth/login",
                json={"email": f"nobody{i}@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(3)
        ]
    assert statuses == [401, 401, 429]


def test_each_request_is_logged_once_by_quartchat_and_never_by_the_server(
    service: Service,
) -> None:
    httpx.post(service.url + "/api/chat", json=CHAT, headers={"X-Request-ID": "log-me-once"})
    log = service.log()
    assert log.count('"request_id":"log-me-once"') == 1
    assert "uvicorn.access" not in log and "hypercorn.access" not in log
    # The server's own lines go through quartchat's one handler: each once, in its format.
    lines = log.splitlines()
    assert len(lines) == len(set(lines))


def test_an_unknown_server_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "quartchat"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path), "AUTH_MODE": "none", "SERVER": "granian"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert refused.stderr.startswith("quartchat: ")
    assert "server" in refused.stderr and "'hypercorn' or 'uvicorn'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_each_server_loads_only_its_own_event_loop(small_bodies: Service, server: str) -> None:
    # uvicorn's service runs on uvloop; hypercorn's never loads it (nor uvicorn): only the chosen
    # server's module is imported. The shared objects a process has mapped say what it loaded.
    assert small_bodies.process is not None
    maps = Path(f"/proc/{small_bodies.process.pid}/maps").read_text()
    assert ("uvloop" in maps) == (server == "uvicorn")
