"""docs/deploy.md's reverse-proxy configurations, run: nginx and Caddy in front of the real service.

Each proxy runs the snippet read from the docs, changed only where a test machine must differ (the
listening address and quartchat's port; see `nginx_site` and `caddyfile`), so the docs cannot
drift from what is tested. Needs Debian's nginx and caddy (scripts/test installs them when run as
root): without them these tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import CHAT, SERVERS, parse_events
from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import ROOT, Service, eventually, free_port

DEPLOY = ROOT / "docs" / "deploy.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"
MAX_BODY = 1024 * 1024  # quartchat's MAX_BODY_BYTES and nginx's client_max_body_size 1m


def docs_block(language: str, index: int = 0) -> str:
    """The `index`th fenced block of `language` in docs/deploy.md."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", DEPLOY.read_text(), re.M | re.S)
    return str(blocks[index])


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert text.count(old) == 1, f"expected {old!r} once in the docs' snippet"
        text = text.replace(old, new)
    return text


def nginx_site(listen_port: int, quartchat_port: int) -> str:
    return substitute(
        docs_block("nginx"),
        {
            "listen 80;": f"listen 127.0.0.1:{listen_port};",
            "server 127.0.0.1:8333;": f"server 127.0.0.1:{quartchat_port};",
        },
    )


def nginx_conf(workdir: Path) -> str:
    """What Debian's /etc/nginx/nginx.conf does around a site, with every path under `workdir`.

    `gzip on` for event streams too stands for a site-wide compression setting that the docs'
    `gzip off` must override; the log format records nginx's request id for comparison.
    """
    return f"""\
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    log_format ids '$request_id $status $request_uri';
    access_log {workdir}/access.log ids;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    gzip on;
    gzip_types text/event-stream application/json;
    include {workdir}/quartchat.conf;
}}
"""


def caddyfile(listen_port: int, quartchat_port: int) -> str:
    """The docs' site, with their `encode` lines added inside it, served over plain HTTP."""
    site = substitute(
        docs_block("caddyfile", 0),
        {
            "chat.example.com {": f"http://127.0.0.1:{listen_port} {{",
            "127.0.0.1:8333": f"127.0.0.1:{quartchat_port}",
        },
    )
    head, rest = site.split("\n", 1)
    # No admin endpoint: it would listen on a fixed port (2019), one per machine.
    return "{\n\tadmin off\n}\n\n" + head + "\n" + docs_block("caddyfile", 1) + rest


@dataclass
class Proxy:
    name: str
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.workdir.glob("*.log")))


def start_nginx(workdir: Path, port: int, quartchat_port: int) -> subprocess.Popen[bytes]:
    (workdir / "quartchat.conf").write_text(nginx_site(port, quartchat_port))
    (workdir / "nginx.conf").write_text(nginx_conf(workdir))
    with (workdir / "stderr.log").open("wb") as stderr:
        return subprocess.Popen(
            [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", "nginx.conf"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def start_caddy(workdir: Path, port: int, quartchat_port: int) -> subprocess.Popen[bytes]:
    (workdir / "Caddyfile").write_text(caddyfile(port, quartchat_port))
    home = str(workdir / "home")  # Caddy's data and autosaved config go here, not in ~
    env = {**os.environ, "HOME": home, "XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home}
    with (workdir / "caddy.log").open("wb") as stderr:
        return subprocess.Popen(
            [CADDY, "run", "--adapter", "caddyfile", "--config", str(workdir / "Caddyfile")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


STARTERS = {"nginx": (NGINX, start_nginx), "caddy": (CADDY, start_caddy)}


def installed(name: str) -> pytest.MarkDecorator:
    binary = STARTERS[name][0]
    return pytest.mark.skipif(
        not os.path.exists(binary) and not os.environ.get("CI"),
        reason=f"needs Debian's {name} (scripts/test installs it when run as root)",
    )


pytestmark = pytest.mark.e2e


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Each test here that runs the service runs on each server."""
    return str(request.param)


@pytest.fixture(params=[pytest.param(n, marks=installed(n)) for n in STARTERS])
def proxy(request: pytest.FixtureRequest, service: Service) -> Iterator[Proxy]:
    name: str = request.param
    with tempfile.TemporaryDirectory(prefix=f"quartchat-{name}-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx's workers drop root and must reach their temp dirs
        proxy = Proxy(name, free_port(), workdir)
        process = STARTERS[name][1](workdir, proxy.port, service.port)
        try:
            wait_until_healthy(proxy, process)
            yield proxy
        finally:
            process.terminate()
            process.wait(10)


def wait_until_healthy(proxy: Proxy, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{proxy.name} exited:\n{proxy.log()}")
        try:
            if httpx.get(proxy.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proxy.name} did not pass /health through:\n{proxy.log()}")


def chat_of_size(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    empty = orjson.dumps({"messages": [{"role": "user", "content": ""}]})
    return orjson.dumps({"messages": [{"role": "user", "content": "x" * (size - len(empty))}]})


def test_health_and_the_page_come_through(proxy: Proxy) -> None:
    assert httpx.get(proxy.url + "/health").json()["status"] == "ok"
    page = httpx.get(proxy.url + "/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_a_streamed_reply_arrives_while_the_upstream_is_still_sending(
    proxy: Proxy, fake: FakeUpstream
) -> None:
    fake.default_delay = 0.05
    body = {"messages": [{"role": "user", "content": "one two three four five six"}]}
    reads: list[bytes] = []
    first_chunk_at = None
    with httpx.stream("POST", proxy.url + "/api/chat/stream", json=body) as response:
        assert response.status_code == 200
        for data in response.iter_raw():
            reads.append(data)
            if first_chunk_at is None and b"event: chunk" in data:
                first_chunk_at = time.monotonic()
    assert first_chunk_at is not None
    assert first_chunk_at < fake.last_pieces_sent[-1]
    assert len(reads) >= 7  # one read per word, not one lump
    events = parse_events(b"".join(reads))
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == "Echo: one two three four five six"


def test_the_stream_is_not_compressed(proxy: Proxy, fake: FakeUpstream) -> None:
    # A first event this long is enough for compression to start (Caddy's `encode` waits for
    # 512 bytes); nginx's test configuration compresses event streams unless told not to.
    fake.reply_with(Reply(chunks=completion_chunks(["x" * 600, " and more"])))
    with httpx.stream(
        "POST", proxy.url + "/api/chat/stream", json=CHAT, headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.status_code == 200
        assert "content-encoding" not in response.headers


def test_pings_come_through_while_the_upstream_is_silent(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["a"])[:2], hang=True))
    with httpx.stream("POST", proxy.url + "/api/chat/stream", json=CHAT, timeout=10) as response:
        assert response.status_code == 200
        events = parse_events(response.read())
    assert events[0] == ("chunk", {"delta": "a"})
    assert ("comment", "ping") in events
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "UPSTREAM_TIMEOUT"


def test_a_client_hanging_up_closes_the_upstream_request(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["partial"])[:2], hang=True))
    request = orjson.dumps(CHAT)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (proxy.port, len(request), request)
        )
        received = b""
        while b"partial" not in received:
            data = client.recv(65536)
            assert data, f"the proxy closed the connection after {received!r}"
            received += data
    assert fake.wait_for_disconnect(timeout=5) is not None, "the upstream never saw a hang-up"


def test_the_request_id_comes_back_and_matches_quartchats_log(
    proxy: Proxy, service: Service
) -> None:
    response = httpx.post(proxy.url + "/api/chat", json={})
    assert response.status_code == 400
    request_id = response.headers["x-request-id"]
    assert response.json()["error"]["request_id"] == request_id
    assert f'"request_id":"{request_id}"' in service.log()


@pytest.mark.parametrize("proxy", [pytest.param("nginx", marks=installed("nginx"))], indirect=True)
def test_quartchat_answers_with_the_request_id_nginx_logs(proxy: Proxy) -> None:
    response = httpx.post(proxy.url + "/api/chat", json={})
    line = f"{response.headers['x-request-id']} 400 /api/chat\n"
    assert eventually(lambda: line in (proxy.workdir / "access.log").read_text())


def test_a_body_at_the_limit_is_accepted(proxy: Proxy) -> None:
    response = httpx.post(
        proxy.url + "/api/chat",
        content=chat_of_size(MAX_BODY),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


def post_over_the_limit(proxy: Proxy, size: int = MAX_BODY + 1) -> httpx.Response:
    return httpx.post(
        proxy.url + "/api/chat",
        content=chat_of_size(size),
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize("proxy", [pytest.param("nginx", marks=installed("nginx"))], indirect=True)
def test_nginx_refuses_a_body_over_the_limit_with_its_own_page(proxy: Proxy) -> None:
    response = post_over_the_limit(proxy)
    assert response.status_code == 413
    assert response.headers["content-type"] == "text/html"


@pytest.mark.parametrize("proxy", [pytest.param("caddy", marks=installed("caddy"))], indirect=True)
def test_behind_caddy_quartchat_refuses_a_body_over_the_limit(proxy: Proxy) -> None:
    # quartchat lets the client finish sending before it answers: closing with unread bytes made
    # the kernel reset the connection, and Caddy, still sending, answered 502 about half the time.
    for size in (MAX_BODY + 1, 8 * MAX_BODY) * 5:
        response = post_over_the_limit(proxy, size)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "REQUEST_TOO_LARGE"


@installed("caddy")
def test_the_caddy_snippet_is_as_caddy_fmt_writes_it() -> None:
    # Caddy warns about an unformatted Caddyfile each time it starts.
    snippet = docs_block("caddyfile")
    formatted = subprocess.run([CADDY, "fmt", "-"], input=snippet.encode(), capture_output=True)
    assert formatted.stdout.decode() == snippet
