"""docker-compose.scale.yml and the nginx configuration it ships (deploy/nginx/quartchat.conf).

Three layers, each as real as this machine allows:
- the compose model as `docker compose config` resolves it (needs only the docker CLI and its
  compose plugin): what every replica is told, and that nginx's upstream names every replica;
- the nginx file, unchanged but for the addresses, run by Debian's nginx in front of two real
  quartchat processes (no Docker): streams pass event by event, new requests go to the replica
  with fewer in flight;
- the whole stack under a real Docker engine, with Debian's packages standing in for the
  official postgres, redis and nginx images no registry can give us here
  (tests/docker/compose.scale.test.yml): two replicas behind nginx, one login valid on both.
Without the docker CLI, nginx or an engine, each layer skips, unless QUARTCHAT_REQUIRE_DOCKER=1
or CI says that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import parse_events
from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import ROOT, Service, eventually, free_port
from .test_docker import docker_engine_problem, host_gateway_address
from .test_proxy import NGINX, Proxy, nginx_conf, wait_until_healthy

COMPOSE_FILE = "docker-compose.scale.yml"
TEST_OVERRIDE = "tests/docker/compose.scale.test.yml"
NGINX_SITE = ROOT / "deploy" / "nginx" / "quartchat.conf"
REQUIRED = {"SECRET_KEY": "a-shared-secret-for-tests", "POSTGRES_PASSWORD": "pw0123456789"}
ADMIN = {"email": "docker@example.com", "password": "docker-test-password"}  # the override's


def compose_env(**extra: str) -> dict[str, str]:
    """The environment `docker compose` runs in: no .env of a developer's may change it."""
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED and k != "QUARTCHAT_NET"}
    return {**env, **REQUIRED, **extra}


def compose_cli_problem() -> str | None:
    try:
        version = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"no docker compose: {error}"
    return None if version.returncode == 0 else "the docker compose plugin is missing"


def skip_or_fail(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("QUARTCHAT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"QUARTCHAT_REQUIRE_DOCKER=1, but {problem}")
    pytest.skip(problem)


def resolved(*files: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [part for name in files for part in ("-f", name)]
    return subprocess.run(
        ["docker", "compose", *args, "config", "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The compose file as Compose resolves it (interpolation, `extends`, anchors)."""
    skip_or_fail(compose_cli_problem())
    result = resolved(COMPOSE_FILE, env=compose_env())
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def replicas(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = model["services"]
    return {name: s for name, s in services.items() if re.fullmatch(r"quartchat-\d+", name)}


def upstream_servers(site: str) -> list[str]:
    block = re.search(r"upstream quartchat \{(.*?)\}", site, re.S)
    assert block is not None
    return re.findall(r"^\s*server\s+(\S+?);", block.group(1), re.M)


def test_there_are_at_least_two_replicas(model: dict[str, Any]) -> None:
    assert len(replicas(model)) >= 2


def test_every_replica_shares_the_secret_key_the_database_and_redis(
    model: dict[str, Any],
) -> None:
    environments = [service["environment"] for service in replicas(model).values()]
    for setting in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL"):
        values = {environment.get(setting) for environment in environments}
        assert len(values) == 1 and None not in values, (setting, values)
    assert environments[0]["SECRET_KEY"] == REQUIRED["SECRET_KEY"]
    assert environments[0]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert environments[0]["REDIS_URL"].startswith("redis://redis:")


def test_replicas_trust_nginx_alone(model: dict[str, Any]) -> None:
    nginx = model["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    for service in replicas(model).values():
        assert service["environment"]["TRUSTED_PROXIES"] == nginx


def test_only_nginx_is_published(model: dict[str, Any]) -> None:
    published = {name for name, s in model["services"].items() if s.get("ports")}
    assert published == {"nginx"}
    for service in replicas(model).values():
        assert not service.get("volumes"), "a replica must keep nothing of its own"


def test_replicas_keep_the_one_host_files_hardening(model: dict[str, Any]) -> None:
    for service in replicas(model).values():
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["init"] is True


def test_nginx_balances_every_replica_and_nothing_else(model: dict[str, Any]) -> None:
    (mount,) = model["services"]["nginx"]["volumes"]
    assert Path(mount["source"]) == NGINX_SITE
    assert mount["target"] == "/etc/nginx/conf.d/default.conf"
    servers = upstream_servers(NGINX_SITE.read_text())
    assert sorted(servers) == sorted(f"{name}:8333" for name in replicas(model))


def test_compose_refuses_to_start_without_a_shared_secret_key() -> None:
    skip_or_fail(compose_cli_problem())
    env = compose_env()
    del env["SECRET_KEY"]
    result = resolved(COMPOSE_FILE, env=env)
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


# The nginx file in front of two real quartchat processes.


def nginx_site(listen_port: int, ports: list[int]) -> str:
    """The shipped file with a test machine's addresses: nothing else changes."""
    site = NGINX_SITE.read_text()
    assert site.count("listen 80;") == 1
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    servers = upstream_servers(site)
    assert len(servers) == len(ports)
    for server, port in zip(servers, ports, strict=True):
        site = site.replace(f"server {server};", f"server 127.0.0.1:{port};")
    return site


@dataclass
class Balanced:
    proxy: Proxy
    replicas: list[Service]

    def replica_of(self, request_id: str) -> int:
        """Which replica logged `request_id` (waiting for its access line)."""
        found: list[int] = []

        def logged() -> bool:
            found[:] = [i for i, r in enumerate(self.replicas) if request_id in r.log()]
            return bool(found)

        assert eventually(logged, timeout=5), f"no replica logged {request_id}"
        (index,) = found
        return index


@pytest.fixture
def balanced(fake: FakeUpstream) -> Iterator[Balanced]:
    if not os.path.exists(NGINX) and not os.environ.get("CI"):
        pytest.skip("needs Debian's nginx (scripts/test installs it when run as root)")
    # Long enough that a hanging upstream holds its stream for the whole test.
    settings = {"REQUEST_TIMEOUT_SECONDS": "30", "SSE_PING_SECONDS": "0.3"}
    with (
        Service(fake.url, **settings) as first,
        Service(fake.url, **settings) as second,
        tempfile.TemporaryDirectory(prefix="quartchat-nginx-scale-") as tmp,
    ):
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx's workers drop root and must reach their temp dirs
        proxy = Proxy("nginx", free_port(), workdir)
        (workdir / "quartchat.conf").write_text(nginx_site(proxy.port, [first.port, second.port]))
        (workdir / "nginx.conf").write_text(nginx_conf(workdir))
        with (workdir / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", "nginx.conf"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_until_healthy(proxy, process)
            yield Balanced(proxy, [first, second])
        finally:
            process.terminate()
            process.wait(10)


@pytest.mark.e2e
def test_a_reply_streams_through_the_balancer_event_by_event(
    balanced: Balanced, fake: FakeUpstream
) -> None:
    fake.default_delay = 0.05
    body = {"messages": [{"role": "user", "content": "one two three four five six"}]}
    reads: list[bytes] = []
    with httpx.stream(
        "POST",
        balanced.proxy.url + "/api/chat/stream",
        json=body,
        headers={"Accept-Encoding": "gzip"},
    ) as response:
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        reads.extend(response.iter_raw())
    assert len(reads) >= 7  # one read per word, not one lump
    assert parse_events(b"".join(reads))[-1][0] == "done"


@pytest.mark.e2e
def test_new_requests_go_to_the_replica_without_a_stream_in_flight(
    balanced: Balanced, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["held"])[:2], hang=True))
    started = threading.Event()
    release = threading.Event()
    held: dict[str, str] = {}

    def hold_a_stream() -> None:
        body = {"messages": [{"role": "user", "content": "a long one"}]}
        with httpx.stream(
            "POST", balanced.proxy.url + "/api/chat/stream", json=body, timeout=30
        ) as response:
            held["request_id"] = response.headers["x-request-id"]
            for data in response.iter_raw():
                if b"held" in data:
                    started.set()
                    release.wait(30)
                    return

    thread = threading.Thread(target=hold_a_stream, daemon=True)
    thread.start()
    try:
        assert started.wait(15), "the held stream never started"
        # Round robin would send every other one of these to the busy replica.
        answers = [httpx.post(balanced.proxy.url + "/api/chat", json={}) for _ in range(4)]
        served = [balanced.replica_of(answer.headers["x-request-id"]) for answer in answers]
    finally:
        release.set()
        thread.join(30)
    busy = balanced.replica_of(held["request_id"])  # logged when the stream has ended
    assert served == [1 - busy] * 4


# The whole stack under Docker.


@dataclass
class Stack:
    project: str
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 120) -> str:
        files = [part for name in (COMPOSE_FILE, TEST_OVERRIDE) for part in ("-f", name)]
        result = subprocess.run(
            ["docker", "compose", "-p", self.project, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, (
            f"docker compose {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
        return result.stdout

    def replica_of(self, request_id: str) -> str:
        """The replica (service name) whose access log has `request_id`."""
        found: list[str] = []

        def logged() -> bool:
            logs = self.compose("logs", "--no-color", "quartchat-1", "quartchat-2")
            found[:] = sorted(
                {
                    line.split()[0].rsplit("-", 1)[0]
                    for line in logs.splitlines()
                    if request_id in line
                }
            )
            return bool(found)

        assert eventually(logged, timeout=10), f"no replica logged {request_id}"
        (name,) = found
        return name


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Stack, FakeUpstream]]:
    skip_or_fail(docker_engine_problem())
    with FakeUpstream(host=host_gateway_address()) as fake:
        port = free_port()
        stack = Stack(
            project=f"quartchat-scale-test-{uuid.uuid4().hex[:8]}",
            port=port,
            env=compose_env(
                QUARTCHAT_BIND="127.0.0.1",
                QUARTCHAT_PORT=str(port),
                QUARTCHAT_IMAGE="quartchat:test",
                QUARTCHAT_NET="172.30.185",
                QUARTCHAT_TEST_UPSTREAM=f"http://host.docker.internal:{fake.port}/v1",
            ),
        )
        try:
            stack.compose(
                "up", "--detach", "--build", "--wait", "--wait-timeout", "180", timeout=1200
            )
            yield stack, fake
        finally:
            try:
                logs = stack.compose("logs", "--no-color", "--timestamps")
                (ROOT / "artifacts").mkdir(exist_ok=True)
                (ROOT / "artifacts" / f"docker-{stack.project}.log").write_text(logs)
            finally:
                stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")


@pytest.mark.docker
def test_one_login_through_nginx_holds_on_every_replica(
    stack: tuple[Stack, FakeUpstream],
) -> None:
    service, _ = stack
    with httpx.Client(base_url=service.url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        answers = [browser.get("/api/auth/me") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    served = {service.replica_of(answer.headers["x-request-id"]) for answer in answers}
    assert served == {"quartchat-1", "quartchat-2"}


@pytest.mark.docker
def test_a_reply_streams_through_nginx_from_the_upstream_on_the_host(
    stack: tuple[Stack, FakeUpstream],
) -> None:
    service, fake = stack
    fake.default_delay = 0.05
    with httpx.Client(base_url=service.url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        token = browser.post("/api/auth/tokens", json={"name": "scale test"}).json()["token"]
    body = {"messages": [{"role": "user", "content": "one two three four five six"}]}
    reads: list[bytes] = []
    with httpx.stream(
        "POST",
        service.url + "/api/chat/stream",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        reads.extend(response.iter_raw())
    assert len(reads) >= 7
    events = parse_events(b"".join(reads))
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == "Echo: one two three four five six"
