"""Client connections (quartchat/serving/connections.py): closed when their client closes them, capped
below the descriptor limit, exhaustion logged once per interval. The e2e tests run the service, on
each server unless the test is about one server's own way."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import os
import resource
import socket
import subprocess
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from importlib.metadata import version
from typing import Any
from unittest import mock

import h2.connection
import orjson
import psutil
import pytest

from quartchat.serving.connections import (
    DESCRIPTOR_RESERVE,
    HEAD_TIMEOUT_SECONDS,
    ExhaustionLog,
    connection_cap,
)
from quartchat.serving.hypercorn import AcceptingTable, capped

from ..conftest import CHAT, SERVERS
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service, eventually

UPSTREAM_CONNECTIONS = 1000
SMALL_LIMIT = 256
EXHAUSTED = "out of system resource"  # asyncio's words for a failed accept(), and ours
BUSY = "client connections are busy"  # ours, when the cap is reached with none idle
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"  # HTTP/1.1: keep-alive
HALF_A_HEAD = HEALTH_REQUEST[:-2]
STREAM_BODY = orjson.dumps(CHAT)
STREAM_REQUEST = (
    b"POST /api/chat/stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(STREAM_BODY), STREAM_BODY)
)

H2_HEADERS = [
    (":method", "POST"),
    (":path", "/api/chat/stream"),
    (":scheme", "http"),
    (":authority", "localhost"),
    ("content-type", "application/json"),
]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


HYPERCORN_ONLY = pytest.mark.parametrize("server", ["hypercorn"])
UVICORN_ONLY = pytest.mark.parametrize("server", ["uvicorn"])


def process(service: Service) -> psutil.Process:
    assert service.process is not None
    return psutil.Process(service.process.pid)


def close_wait(service: Service) -> int:
    connections = process(service).net_connections()
    return sum(c.status == psutil.CONN_CLOSE_WAIT for c in connections)


def listening_descriptor(service: Service) -> int:
    (listener,) = (
        c.fd for c in process(service).net_connections("tcp") if c.status == psutil.CONN_LISTEN
    )
    return listener


def watched(service: Service, descriptor: int) -> bool:
    """Whether the service's event loop watches `descriptor`: it is in an epoll interest list."""
    pid = process(service).pid
    for entry in os.scandir(f"/proc/{pid}/fd"):
        with suppress(FileNotFoundError):  # a descriptor closed while we look
            if os.readlink(entry.path) != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{entry.name}") as info:
                # One line per watched descriptor: "tfd:  7 events: 19 data: ...".
                if any(line.split()[:2] == ["tfd:", str(descriptor)] for line in info):
                    return True
    return False


def connect(service: Service) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=10)


def read_response(client: socket.socket) -> bytes:
    """One whole response with a Content-Length body, or what came before the server closed."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = client.recv(65536)
        if not chunk:
            return received
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(next(v for k, v in fields.items() if k.lower() == b"content-length"))
    while len(body) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def closed_by_server(client: socket.socket, within: float) -> bool:
    client.settimeout(within)
    try:
        return client.recv(1) == b""
    except TimeoutError:
        return False


def get_health(client: socket.socket) -> bytes:
    client.sendall(HEALTH_REQUEST)
    return read_response(client)


@contextmanager
def service_with_descriptor_limit(
    fake: FakeUpstream, soft: int, hard: int, server: str = "hypercorn", **env: str
) -> Iterator[Service]:
    """The service, started with RLIMIT_NOFILE (soft, hard) as a supervisor or a shell might set."""

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    popen = subprocess.Popen

    def limited(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return popen(args, preexec_fn=set_limit, **kwargs)

    env = {"UPSTREAM_MAX_CONNECTIONS": str(UPSTREAM_CONNECTIONS), "SERVER": server, **env}
    # tests.service starts the process itself, with no hook for its limits.
    with mock.patch.object(subprocess, "Popen", limited):
        service = Service(fake.url, **env).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.e2e
def test_server_closes_a_keep_alive_connection_within_a_second_of_its_client_closing_it(
    service: Service,
) -> None:
    for _ in range(10):
        with connect(service) as client:
            assert get_health(client).startswith(b"HTTP/1.1 200")

    assert eventually(lambda: close_wait(service) == 0, timeout=1.0), (
        f"{close_wait(service)} connections still in CLOSE-WAIT"
    )


@pytest.mark.e2e
@HYPERCORN_ONLY  # uvicorn serves no HTTP/2 on a plain port
def test_server_closes_an_http2_connection_its_client_closed_during_a_stream(
    service: Service, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["busy"])[:2], hang=True))
    http2 = h2.connection.H2Connection()
    http2.initiate_connection()  # prior knowledge: hypercorn takes HTTP/2 on its plain port too
    http2.send_headers(1, [*H2_HEADERS, ("content-length", str(len(STREAM_BODY)))])
    http2.send_data(1, STREAM_BODY, end_stream=True)
    with connect(service) as client:
        client.sendall(http2.data_to_send())
        received = b""
        while b"busy" not in received:
            received += client.recv(65536)

    assert eventually(lambda: close_wait(service) == 0, timeout=1.0), (
        f"{close_wait(service)} connections still in CLOSE-WAIT"
    )


@pytest.mark.e2e
def test_connect_get_close_in_a_loop_leaves_the_descriptor_count_where_it_was(
    service: Service,
) -> None:
    with connect(service) as client:
        get_health(client)  # whatever the first request opens for good is open now
    before = process(service).num_fds()

    for _ in range(300):
        with connect(service) as client:
            get_health(client)

    assert eventually(lambda: process(service).num_fds() <= before + 10, timeout=2.0), (
        f"{process(service).num_fds()} descriptors open, {before} before the loop"
    )


@pytest.mark.e2e
def test_service_raises_its_soft_descriptor_limit_to_the_hard_limit(fake: FakeUpstream) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= SMALL_LIMIT:
        pytest.skip(f"the hard limit here ({hard}) leaves no soft limit below it to raise")

    with service_with_descriptor_limit(fake, soft=SMALL_LIMIT, hard=hard) as service:
        assert process(service).rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)


@pytest.mark.e2e
def test_health_answers_while_more_idle_connections_are_open_than_the_cap(
    fake: FakeUpstream, server: str
) -> None:
    cap = connection_cap(SMALL_LIMIT, UPSTREAM_CONNECTIONS)
    with service_with_descriptor_limit(fake, SMALL_LIMIT, SMALL_LIMIT, server) as service:
        with ExitStack() as crowd:  # slowloris: each holds a connection with half a request head
            process(service).suspend()  # so that the whole crowd is waiting when it looks
            for _ in range(3 * cap):
                crowd.enter_context(connect(service)).sendall(HALF_A_HEAD)
            with connect(service) as client:  # the last in the queue
                client.sendall(HEALTH_REQUEST)
                process(service).resume()

                assert read_response(client).startswith(b"HTTP/1.1 200")
            assert process(service).num_fds() < SMALL_LIMIT

        with connect(service) as client:
            assert get_health(client).startswith(b"HTTP/1.1 200")
        # Idle connections made room; none had to wait or was refused.
        assert EXHAUSTED not in service.log()
        assert BUSY not in service.log()


@pytest.fixture
def saturated(fake: FakeUpstream, server: str) -> Iterator[tuple[Service, list[socket.socket]]]:
    """The service under a small descriptor limit, every connection it may hold busy streaming."""
    cap = connection_cap(SMALL_LIMIT, UPSTREAM_CONNECTIONS)
    fake.reply_with(*(Reply(chunks=completion_chunks(["busy"])[:2], hang=True) for _ in range(cap)))
    with (
        service_with_descriptor_limit(fake, SMALL_LIMIT, SMALL_LIMIT, server) as service,
        ExitStack() as streams,
    ):
        clients = [streams.enter_context(connect(service)) for _ in range(cap)]
        for client in clients:
            client.sendall(STREAM_REQUEST)
        for client in clients:
            received = b""
            while b"busy" not in received:
                received += client.recv(65536)
        yield service, clients


@pytest.mark.e2e
@HYPERCORN_ONLY  # uvicorn answers them 503 SERVER_BUSY instead (below)
def test_connections_over_the_cap_wait_in_the_backlog_until_a_busy_one_ends(
    saturated: tuple[Service, list[socket.socket]],
) -> None:
    service, streams = saturated
    with ExitStack() as stack:
        waiting = [stack.enter_context(connect(service)) for _ in range(10)]
        for client in waiting:
            client.sendall(HEALTH_REQUEST)

        waiting[0].settimeout(1.0)
        with pytest.raises(TimeoutError):
            waiting[0].recv(1)  # no answer while every connection the service may hold is busy

        for client in streams:
            client.close()  # the streams end, their connections close
        for client in waiting:
            client.settimeout(10)
            assert read_response(client).startswith(b"HTTP/1.1 200")
    assert service.log().count(EXHAUSTED) <= 2  # the pauses, not one line per accept() attempt


@pytest.mark.e2e
@HYPERCORN_ONLY  # asyncio's accept loop; uvicorn accepts each newcomer and answers it
def test_a_service_with_every_connection_busy_does_not_spin_on_connections_in_the_backlog(
    saturated: tuple[Service, list[socket.socket]],
) -> None:
    service, _ = saturated
    listener = listening_descriptor(service)
    assert watched(service, listener)  # accepting while nobody waits, full as it is
    with connect(service) as waiting:
        waiting.sendall(HEALTH_REQUEST)

        # A loop that watches a listening socket with a connection waiting in its backlog wakes
        # for it on every turn; with no room for it, the service stops watching (asyncio looks
        # again once a second) and its loop sleeps.
        assert eventually(lambda: not watched(service, listener), timeout=5.0), (
            "the service keeps watching its listening socket with no room for the connection"
        )


@pytest.mark.e2e
@UVICORN_ONLY  # hypercorn leaves them waiting in the backlog (above)
def test_a_connection_over_the_cap_is_answered_503_server_busy_until_a_busy_one_ends(
    saturated: tuple[Service, list[socket.socket]],
) -> None:
    service, streams = saturated
    with connect(service) as refused:
        refused.sendall(HEALTH_REQUEST)
        answer = read_response(refused)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"\r\nretry-after: 1\r\n" in head.lower()
        error = orjson.loads(body)["error"]
        assert error["code"] == "SERVER_BUSY" and error["message"] and error["request_id"]
        assert closed_by_server(refused, within=5)

    streams[0].close()  # one stream ends: room for one

    def served() -> bool:
        with connect(service) as client:
            return get_health(client).startswith(b"HTTP/1.1 200")

    assert eventually(served, timeout=10)
    assert service.log().count(BUSY) == 1  # said once per interval, however many were refused


@pytest.mark.e2e
def test_only_a_new_connections_first_request_head_must_arrive_within_the_head_timeout(
    service: Service,
) -> None:
    with connect(service) as slow, connect(service) as keep_alive:
        assert get_health(keep_alive).startswith(b"HTTP/1.1 200")
        slow.sendall(HALF_A_HEAD)

        assert closed_by_server(slow, within=HEAD_TIMEOUT_SECONDS + 5)
        assert get_health(keep_alive).startswith(b"HTTP/1.1 200")


@pytest.mark.e2e
def test_a_request_head_over_16_kib_is_refused_and_its_connection_closed(service: Service) -> None:
    with connect(service) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        for i in range(40):  # 40 headers of 1 KiB, and no end of the head
            client.sendall(b"X-Filler-%d: %s\r\n" % (i, b"x" * 1000))
        answer = read_response(client)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:100]
        assert closed_by_server(client, within=5)


def test_connection_cap_gives_clients_all_but_the_reserve_and_the_pool_of_a_large_limit() -> None:
    assert connection_cap(65536, UPSTREAM_CONNECTIONS) == 65536 - DESCRIPTOR_RESERVE - 1000


def test_connection_cap_gives_clients_half_of_a_limit_too_small_for_a_full_pool() -> None:
    assert connection_cap(1024, UPSTREAM_CONNECTIONS) == (1024 - DESCRIPTOR_RESERVE) // 2


@pytest.mark.parametrize("limit", [SMALL_LIMIT, 1024, 4096, 65536])
def test_connection_cap_leaves_room_for_a_full_upstream_pool_and_the_reserve(limit: int) -> None:
    cap = connection_cap(limit, UPSTREAM_CONNECTIONS)

    # Each client connection uses at most one upstream connection, from a pool of 1000 at most.
    assert cap + min(cap, UPSTREAM_CONNECTIONS) + DESCRIPTOR_RESERVE <= limit


async def test_resource_exhaustion_is_logged_once_per_interval_with_a_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(ExhaustionLog(loop, interval=0.1))
    failure = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }
    caplog.set_level(logging.WARNING, logger="quartchat.connections")

    for _ in range(1000):
        loop.call_exception_handler(failure)
    for _ in range(250):
        if len(caplog.records) >= 2:
            break
        await asyncio.sleep(0.02)

    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource ([Errno 24] Too many open files): new "
        "connections wait in the listen backlog; repeats are counted for 0.1 s",
        "out of system resource 999 more times in 0.1 s",
    ]


async def test_other_loop_errors_still_reach_the_previous_exception_handler() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    loop.set_exception_handler(ExhaustionLog(loop))
    failure = {"message": "Task exception was never retrieved", "exception": ValueError()}

    loop.call_exception_handler(failure)

    assert seen == [failure]


def reports_until_the_reporting_callback_returns(
    loop: asyncio.AbstractEventLoop,
) -> tuple[list[dict[str, Any]], asyncio.Future[None]]:
    """The loop's error reports, and a future set once the callback that made the first returns.

    asyncio's accept() loop (`_accept_connection`, up to `backlog` attempts) runs in one callback
    and reports each failure synchronously: a callback scheduled from the first report runs only
    after that loop has ended, so every report it was going to make has been made by then.
    """
    reports: list[dict[str, Any]] = []
    returned: asyncio.Future[None] = loop.create_future()

    def report(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reports.append(context)
        if len(reports) == 1:
            loop.call_soon(returned.set_result, None)

    loop.set_exception_handler(report)
    return reports, returned


async def test_a_full_table_reports_one_exhaustion_per_pause_not_one_per_accept_attempt() -> None:
    loop = asyncio.get_running_loop()
    reports, accept_loop_ended = reports_until_the_reporting_callback_returns(loop)
    listener = capped(socket.create_server(("127.0.0.1", 0)), AcceptingTable(loop, cap=0))
    server = await asyncio.start_server(lambda _reader, _writer: None, sock=listener, backlog=100)
    with ExitStack() as clients:
        for _ in range(3):
            clients.enter_context(socket.create_connection(listener.getsockname()))
        await asyncio.wait_for(accept_loop_ended, timeout=5)
        server.close()
        await server.wait_closed()

    assert [str(r["exception"]) for r in reports] == [
        "[Errno 24] all 0 client connections are busy"
    ]


async def test_running_out_of_descriptors_is_reported_once_per_pause_not_once_per_accept() -> None:
    loop = asyncio.get_running_loop()
    reports, accept_loop_ended = reports_until_the_reporting_callback_returns(loop)
    listener = capped(socket.create_server(("127.0.0.1", 0)), AcceptingTable(loop, cap=1000))
    server = await asyncio.start_server(lambda _reader, _writer: None, sock=listener, backlog=100)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with ExitStack() as clients:
        for _ in range(3):
            clients.enter_context(socket.create_connection(listener.getsockname()))
        lowest_free = os.dup(listener.fileno())
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no descriptor left
        try:
            await asyncio.wait_for(accept_loop_ended, timeout=5)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        server.close()
        await server.wait_closed()

    assert [r["exception"].errno for r in reports] == [errno.EMFILE]


def test_hypercorn_is_the_version_the_connection_guard_was_written_for() -> None:
    # quartchat/serving/connections.py overrides hypercorn internals
    # (quartchat/serving/adapters/hypercorn.py); on an upgrade check whether the CLOSE-WAIT fix
    # landed (docs/upstream/hypercorn-close-wait.md) and what tests/serving/test_canaries.py says.
    assert version("hypercorn") == "0.18.0"


def test_uvicorn_and_httptools_are_the_versions_the_guard_was_written_for() -> None:
    # quartchat/serving/uvicorn.py subclasses uvicorn's httptools protocol and replaces its
    # signal handling (quartchat/serving/adapters/uvicorn.py); the head bound there exists
    # because httptools 0.9.0 has none. On an upgrade read both again, with the canaries.
    assert (version("uvicorn"), version("httptools")) == ("0.55.0", "0.9.0")


def test_asyncio_still_accepts_through_the_socket_and_pauses_on_exhaustion() -> None:
    accept = inspect.getsource(vars(BaseSelectorEventLoop)["_accept_connection"])
    for needed in (
        "sock.accept()",
        "except (BlockingIOError",
        "errno.EMFILE",
        "ACCEPT_RETRY_DELAY",
    ):
        assert needed in accept
