"""The image and docker-compose.yml end to end: built, started, served, stopped with SIGTERM.

`docker compose` runs the repo's docker-compose.yml with tests/docker/compose.test.yml on top (it
only points the app at a fake upstream on this host and shortens the timings), under a project
name of its own, published on 127.0.0.1:8333. Without a Docker engine the module skips, unless
QUARTCHAT_REQUIRE_DOCKER=1 (CI), where that is a failure. Run alone: `scripts/test -m docker`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from .conftest import parse_events
from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import ROOT, free_port

pytestmark = pytest.mark.docker

COMPOSE_FILES = ("docker-compose.yml", "tests/docker/compose.test.yml")
IMAGE = "quartchat:test"
KEY = "sk-docker-test-key-0000000000"  # set in tests/docker/compose.test.yml
ADMIN = {"email": "docker@example.com", "password": "docker-test-password"}  # ditto
GRACE = 5.0  # SHUTDOWN_GRACE_SECONDS inside the container
STOP_GRACE_PERIOD = 15.0  # compose.test.yml's stop_grace_period: Docker's SIGKILL comes after it
MARGIN = 5.0  # slack for a loaded machine; never a measure of speed


def docker_engine_problem() -> str | None:
    """Why `docker compose` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
        compose = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    if info.returncode:
        return f"no Docker engine answers: {info.stderr.strip()[-300:]}"
    if compose.returncode:
        return "the docker compose plugin (Compose v2) is missing"
    return None


def host_gateway_address() -> str:
    """The host's address on Docker's default bridge, where `host-gateway` leads on Linux.

    Elsewhere (Docker Desktop routes host.docker.internal itself): all IPv4 interfaces. Never ""
    (every interface and address family, each socket on a port of its own).
    """
    inspect = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    configs = json.loads(inspect.stdout) if inspect.returncode == 0 else None
    for config in configs or []:
        # Docker's default bridge takes the subnet's first address, and may not list it.
        gateway = config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
        with socket.socket() as probe:
            try:
                probe.bind((gateway, 0))
            except OSError:
                continue
        return gateway
    return "0.0.0.0"


def port_8333_or_a_free_one() -> int:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 8333))
        except OSError:
            return free_port()
    return 8333


@dataclass
class Stack:
    """One compose project: the service from docker-compose.yml plus the test override."""

    project: str
    server: str
    port: int
    env: dict[str, str]
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        """An API token of the admin the compose override makes (ADMIN_EMAIL), as a header."""
        if not self.token:
            with httpx.Client(base_url=self.url) as browser:
                assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
                made = browser.post("/api/auth/tokens", json={"name": "docker tests"})
                self.token = made.json()["token"]
        return {"Authorization": f"Bearer {self.token}"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        files = [part for name in COMPOSE_FILES for part in ("-f", name)]
        return subprocess.run(
            ["docker", "compose", "-p", self.project, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"docker compose {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
        return result

    def container(self) -> str:
        return self.compose("ps", "--all", "--quiet", "quartchat").stdout.strip()

    def inspect(self, template: str) -> str:
        result = subprocess.run(
            ["docker", "inspect", "--format", template, self.container()],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.strip()

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-T", "quartchat", *command, timeout=60)

    def up(self) -> None:
        self.compose("up", "--detach", "--build", "--wait", "--wait-timeout", "120", timeout=900)

    def ensure_up(self) -> None:
        """Start the service again if an earlier test (the SIGTERM one) stopped it."""
        if not self.container() or self.inspect("{{.State.Running}}") != "true":
            self.up()

    def save_logs(self) -> None:
        logs = self.compose("logs", "--no-color", "--timestamps").stdout
        path = ROOT / "artifacts" / f"docker-{self.project}.log"
        path.parent.mkdir(exist_ok=True)
        path.write_text(logs)


@pytest.fixture(scope="module")
def engine() -> None:
    problem = docker_engine_problem()
    if problem is None:
        return
    if os.environ.get("QUARTCHAT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"QUARTCHAT_REQUIRE_DOCKER=1, but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def fake(engine: None) -> Iterator[FakeUpstream]:
    """The upstream runs on the host; the container reaches it as host.docker.internal."""
    with FakeUpstream(host=host_gateway_address()) as fake:
        yield fake


@pytest.fixture(scope="module", params=["hypercorn", "uvicorn"])
def stack(request: pytest.FixtureRequest, fake: FakeUpstream) -> Iterator[Stack]:
    """The image run as users run it, with `SERVER` set to each supported server in turn."""
    port = port_8333_or_a_free_one()
    stack = Stack(
        project=f"quartchat-test-{request.param}-{uuid.uuid4().hex[:8]}",
        server=request.param,
        port=port,
        env={
            **os.environ,
            "QUARTCHAT_BIND": "127.0.0.1",
            "QUARTCHAT_PORT": str(port),
            "QUARTCHAT_IMAGE": IMAGE,
            "QUARTCHAT_TEST_UPSTREAM": f"http://host.docker.internal:{fake.port}/v1",
            "QUARTCHAT_TEST_GRACE": str(GRACE),
            "QUARTCHAT_TEST_SERVER": request.param,
        },
    )
    try:
        stack.up()
        yield stack
    finally:
        try:
            stack.save_logs()
        finally:
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


@pytest.fixture
def service(stack: Stack) -> Stack:
    stack.ensure_up()
    return stack


def test_health_answers_through_the_published_port(service: Stack) -> None:
    response = httpx.get(service.url + "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_container_serves_on_the_server_named_by_SERVER(service: Stack) -> None:
    # Each server names itself in the Server header: hypercorn "hypercorn-h11", uvicorn "uvicorn".
    server = httpx.get(service.url + "/health", timeout=5).headers.get("server", "")
    assert server.startswith(service.server), server


def test_the_chat_page_is_served_after_a_login(service: Stack) -> None:
    with httpx.Client(base_url=service.url) as browser:
        assert browser.get("/").headers["location"] == "/login?next=/"
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        response = browser.get("/")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_nobody_chats_without_an_account(service: Stack, fake: FakeUpstream) -> None:
    before = len(fake.chat_requests())
    body = {"messages": [{"role": "user", "content": "free tokens?"}]}
    response = httpx.post(service.url + "/api/chat", json=body)
    assert response.status_code == 401
    assert len(fake.chat_requests()) == before


def test_accounts_live_in_the_data_volume(service: Stack) -> None:
    listing = service.exec("ls", "/data")
    assert {"quartchat.db", "secret_key"} <= set(listing.stdout.split())


def test_the_data_volume_is_the_app_user_s_alone(service: Stack) -> None:
    modes = service.exec(
        "stat", "-c", "%n %a %u", "/data", "/data/quartchat.db", "/data/secret_key"
    )
    assert modes.stdout.split("\n")[:3] == [
        "/data 700 10001",
        "/data/quartchat.db 600 10001",
        "/data/secret_key 600 10001",
    ]


def test_a_chat_streams_through_the_container_from_the_upstream_on_the_host(
    service: Stack,
) -> None:
    body = {"messages": [{"role": "user", "content": "hello from the host"}]}
    with httpx.stream(
        "POST", service.url + "/api/chat/stream", json=body, headers=service.auth, timeout=30
    ) as response:
        assert response.status_code == 200
        events = parse_events(response.read())
    assert "".join(data["delta"] for kind, data in events if kind == "chunk") == (
        "Echo: hello from the host"
    )
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == "Echo: hello from the host"


def test_the_key_from_the_environment_reaches_the_upstream(
    service: Stack, fake: FakeUpstream
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(service.url + "/api/chat", json=body, headers=service.auth).status_code == 200
    assert fake.chat_requests()[-1].headers["authorization"] == f"Bearer {KEY}"


def test_docker_reports_the_container_healthy(service: Stack) -> None:
    assert service.inspect("{{.State.Health.Status}}") == "healthy"


def test_the_app_runs_as_a_non_root_user(service: Stack) -> None:
    uid = service.exec("id", "-u")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() != "0"


def test_only_the_data_volume_and_tmp_are_writable(service: Stack) -> None:
    probe = service.exec(
        "sh", "-c", "touch /data/probe && touch /tmp/probe && ! touch /probe 2>/dev/null"
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr


def test_the_image_is_at_most_230_mb(stack: Stack) -> None:
    # python:3.12-slim is ~157 MB; the rest is quartchat and its dependencies, ~55 MB since
    # accounts brought SQLAlchemy, Alembic, asyncpg and argon2 (bytecode only for what runs),
    # ~4 MB more for the second server (uvicorn, uvloop, httptools and click, stripped).
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", IMAGE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert size <= 230_000_000, f"{size / 1e6:.1f} MB"


@dataclass
class StreamLog:
    """What a client saw of one stream, and when."""

    body: bytearray = field(default_factory=bytearray)
    chunk_times: list[float] = field(default_factory=list)
    first_chunk: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None
    ended_at: float = 0.0

    def last_event(self) -> tuple[str, Any]:
        """("done", None), ("error", code), or ("cut", why) when the stream broke off."""
        if self.failure:
            return ("cut", self.failure)
        events = parse_events(bytes(self.body))
        if not events:
            return ("nothing", None)
        kind, data = events[-1]
        return (kind, data["error"]["code"] if kind == "error" else None)


def read_stream(url: str, auth: dict[str, str], log: StreamLog) -> None:
    body = {"messages": [{"role": "user", "content": "a long answer, please"}]}
    try:
        with httpx.stream(
            "POST", url + "/api/chat/stream", json=body, headers=auth, timeout=60
        ) as response:
            for data in response.iter_raw():
                log.body += data
                chunks = log.body.count(b"event: chunk\n")
                log.chunk_times += [time.monotonic()] * (chunks - len(log.chunk_times))
                if chunks:
                    log.first_chunk.set()
    except httpx.HTTPError as exc:
        log.failure = repr(exc)
    finally:
        log.ended_at = time.monotonic()
        log.first_chunk.set()


@dataclass
class Shutdown:
    """One `docker compose stop` (SIGTERM, then SIGKILL after stop_grace_period) mid-stream."""

    long: StreamLog
    short: StreamLog
    sigterm_at: float  # when `docker compose stop` was started
    refused_at: float | None  # when /health first went unanswered: the server is shutting down
    stopped_at: float
    exit_code: int


def answers_health(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_stream(stack: Stack) -> StreamLog:
    log = StreamLog()
    threading.Thread(target=read_stream, args=(stack.url, stack.auth, log), daemon=True).start()
    assert log.first_chunk.wait(30), "the stream never started"
    return log


@pytest.fixture(scope="module")
def shutdown(stack: Stack, fake: FakeUpstream) -> Shutdown:
    stack.ensure_up()
    fake.reply_with(
        Reply(chunks=completion_chunks(["tick"] * 120), delay=0.5),  # a minute: outlives the grace
        Reply(chunks=completion_chunks(["tock"] * 10), delay=0.25),  # 3 s: within it
    )
    long = start_stream(stack)
    short = start_stream(stack)
    stopper = threading.Thread(target=stack.compose, args=("stop",), kwargs={"timeout": 120})
    sigterm_at = time.monotonic()
    stopper.start()
    refused_at = None
    while refused_at is None and time.monotonic() < sigterm_at + GRACE + MARGIN:
        if not answers_health(stack.url):
            refused_at = time.monotonic()
        time.sleep(0.1)
    stopper.join(STOP_GRACE_PERIOD + 60)
    stopped_at = time.monotonic()
    for log in (long, short):
        while not log.ended_at and time.monotonic() < stopped_at + 10:
            time.sleep(0.05)
    return Shutdown(
        long=long,
        short=short,
        sigterm_at=sigterm_at,
        stopped_at=stopped_at,
        refused_at=refused_at,
        exit_code=int(stack.inspect("{{.State.ExitCode}}")),
    )


def test_sigterm_lets_a_stream_shorter_than_the_grace_finish_with_done(
    shutdown: Shutdown,
) -> None:
    assert shutdown.refused_at is not None, "the server never began to shut down"
    assert shutdown.short.ended_at > shutdown.refused_at, "it was over before the shutdown began"
    assert shutdown.short.last_event() == ("done", None)


def test_sigterm_ends_a_longer_stream_with_a_server_shutting_down_error(
    shutdown: Shutdown,
) -> None:
    assert shutdown.long.last_event() == ("error", "SERVER_SHUTTING_DOWN")


def test_streams_keep_flowing_during_the_grace_period(shutdown: Shutdown) -> None:
    assert shutdown.refused_at is not None, "the server never began to shut down"
    assert any(t > shutdown.refused_at + 1 for t in shutdown.long.chunk_times)


def test_the_longer_stream_ends_within_the_grace_period_and_a_margin(shutdown: Shutdown) -> None:
    assert shutdown.long.ended_at - shutdown.sigterm_at < GRACE + MARGIN


def test_new_requests_are_refused_while_streams_are_still_finishing(shutdown: Shutdown) -> None:
    assert shutdown.refused_at is not None
    assert shutdown.refused_at < shutdown.long.ended_at


def test_the_container_exits_cleanly_before_docker_would_kill_it(shutdown: Shutdown) -> None:
    assert shutdown.exit_code == 0  # 137 would mean Docker's SIGKILL after stop_grace_period
    assert shutdown.stopped_at - shutdown.sigterm_at < STOP_GRACE_PERIOD
