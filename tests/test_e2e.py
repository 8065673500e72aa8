"""End to end over real sockets: the service on each server, a fake upstream on 127.0.0.1."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

from .conftest import CHAT, SERVERS, parse_events
from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import Service, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Each test here that runs the service runs on each server."""
    return str(request.param)


def test_health_page_and_models(service: Service) -> None:
    assert httpx.get(service.url + "/health").json()["status"] == "ok"
    page = httpx.get(service.url + "/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    models = httpx.get(service.url + "/api/models").json()
    assert models == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini", "fake-large", "fake-small"],
        "any_model": False,
        "warnings": [],
        "prices": {},
    }


def test_chat_returns_the_upstream_reply(service: Service, fake: FakeUpstream) -> None:
    response = httpx.post(service.url + "/api/chat", json=CHAT)
    assert response.status_code == 200
    assert response.json()["message"] == {"role": "assistant", "content": "Echo: Hello"}
    assert fake.chat_requests()[-1].headers["authorization"] == "Bearer sk-e2e-test-key-0000000000"


def test_stream_arrives_piece_by_piece_and_ends_with_done(
    service: Service, fake: FakeUpstream
) -> None:
    fake.default_delay = 0.05
    body = {"messages": [{"role": "user", "content": "one two three four"}]}
    reads = []
    with httpx.stream("POST", service.url + "/api/chat/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["x-accel-buffering"] == "no"
        reads = list(response.iter_raw())
    events = parse_events(b"".join(reads))
    assert sum(1 for kind, _ in events if kind == "chunk") == 5
    assert len(reads) >= 5  # not buffered into one write
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == "Echo: one two three four"
    assert events[-1][1]["usage"]["completion_tokens"] == 5


def test_client_disconnect_closes_the_upstream_within_a_second(
    service: Service, fake: FakeUpstream
) -> None:
    first = completion_chunks(["partial"])[:2]
    fake.reply_with(Reply(chunks=first, hang=True))
    request = orjson.dumps(CHAT)
    with socket.create_connection(("127.0.0.1", service.port)) as client:
        client.sendall(
            b"POST /api/chat/stream HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(request), request)
        )
        received = b""
        while b"partial" not in received:
            received += client.recv(65536)
        closed_at = time.monotonic()
    hung_up_at = fake.wait_for_disconnect(timeout=5)
    assert hung_up_at is not None, "the upstream never saw its connection close"
    assert hung_up_at - closed_at < 1.0


def test_idle_upstream_gets_pings_then_an_idle_timeout_error(
    service: Service, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["a"])[:2], hang=True))
    with httpx.stream("POST", service.url + "/api/chat/stream", json=CHAT, timeout=10) as response:
        assert response.status_code == 200
        events = parse_events(response.read())
    assert events[0] == ("chunk", {"delta": "a"})
    assert ("comment", "ping") in events
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "UPSTREAM_TIMEOUT"


def test_no_first_byte_in_time_is_an_http_504(service: Service, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=[], hang=True))
    response = httpx.post(service.url + "/api/chat/stream", json=CHAT, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "UPSTREAM_TIMEOUT"


def test_upstream_error_status_is_a_real_http_error(service: Service, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(status=401, chunks=[b'{"error": {"message": "bad key"}}'], headers={}))
    response = httpx.post(
        service.url + "/api/chat/stream", json=CHAT, headers={"X-Request-ID": "e2e-1"}
    )
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "UPSTREAM_AUTH",
        "message": (
            "The service's connection to the model provider is misconfigured; "
            "tell the administrator."
        ),
        "request_id": "e2e-1",
    }
    assert response.headers["x-request-id"] == "e2e-1"


def test_stream_options_refusal_is_retried_without_them(
    service: Service, fake: FakeUpstream
) -> None:
    fake.reject_stream_options = True
    events = parse_events(httpx.post(service.url + "/api/chat/stream", json=CHAT).content)
    assert events[-1][0] == "done"
    assert [("stream_options" in r.json) for r in fake.chat_requests()] == [True, False]


def test_unreachable_upstream_is_502(server: str) -> None:
    with Service(f"http://127.0.0.1:{free_port()}/v1", SERVER=server) as service:
        response = httpx.post(service.url + "/api/chat/stream", json=CHAT)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UPSTREAM_UNREACHABLE"


def test_the_service_logs_one_structured_line_per_request_and_no_key(
    service: Service, fake: FakeUpstream
) -> None:
    httpx.post(service.url + "/api/chat/stream", json=CHAT, headers={"X-Request-ID": "log-me"})
    time.sleep(0.2)
    log = service.log()
    lines = [
        orjson.loads(line.split("quartchat.access ", 1)[1])
        for line in log.splitlines()
        if "quartchat.access" in line
    ]
    mine = [line for line in lines if line["request_id"] == "log-me"]
    assert len(mine) == 1
    assert mine[0]["outcome"] == "done"
    assert "sk-e2e-test-key" not in log


def test_pings_between_slow_chunks_lose_no_text(service: Service, fake: FakeUpstream) -> None:
    # Each gap (0.45 s) outlasts the ping interval (0.3 s): the read is interrupted for a ping,
    # and the bytes that arrive after it must still be relayed, in order.
    words = ["one ", "two ", "three "]
    fake.reply_with(Reply(chunks=completion_chunks(words), delay=0.45))
    events = parse_events(
        httpx.post(service.url + "/api/chat/stream", json=CHAT, timeout=10).content
    )
    assert events.count(("comment", "ping")) >= 3
    assert "".join(data["delta"] for kind, data in events if kind == "chunk") == "one two three "
    assert events[-1][0] == "done"
