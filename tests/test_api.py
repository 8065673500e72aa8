from __future__ import annotations

import logging

import httpx
import orjson
import pytest
import respx
from quart.typing import TestClientProtocol as Client

from quartchat import create_app

from .conftest import CHAT, SECRET, UPSTREAM, assert_error, make_settings, parse_events
from .fake_upstream import completion_chunks
from .upstream_helpers import ChunkStream, sse_response

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def stream_of(*words: str, usage: bool = True) -> httpx.Response:
    return sse_response(*completion_chunks(list(words), usage=usage))


async def test_chat_returns_the_envelope_with_usage(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(json=COMPLETION)
    response = await client.post("/api/chat", json=CHAT)
    assert response.status_code == 200
    assert await response.get_json() == {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini-2024",
        "created": 1700000000,
        "message": {"role": "assistant", "content": "Hi there"},
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


async def test_chat_forwards_options_and_the_key(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    body = {**CHAT, "model": "m1", "temperature": 0.5, "top_p": 0.9, "max_tokens": 7, "unknown": 1}
    assert (await client.post("/api/chat", json=body)).status_code == 200
    sent = route.calls.last.request
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert orjson.loads(sent.content) == {
        "model": "m1",
        "messages": CHAT["messages"],
        "stream": False,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 7,
    }


async def test_chat_uses_the_configured_model_by_default(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    await client.post("/api/chat", json=CHAT)
    assert orjson.loads(route.calls.last.request.content)["model"] == "gpt-4o-mini"


async def test_stream_relays_deltas_in_order_then_done_with_usage(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(return_value=stream_of("Hel", "lo", " you"))
    response = await client.post("/api/chat/stream", json=CHAT)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    events = parse_events(await response.get_data())
    assert [e for e in events if e[0] == "chunk"] == [
        ("chunk", {"delta": "Hel"}),
        ("chunk", {"delta": "lo"}),
        ("chunk", {"delta": " you"}),
    ]
    kind, done = events[-1]
    assert kind == "done"
    assert done["message"] == {"role": "assistant", "content": "Hello you"}
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert set(done) == {"id", "model", "created", "message", "finish_reason", "usage"}


async def test_stream_asks_the_upstream_for_usage(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=stream_of("x"))
    await (await client.post("/api/chat/stream", json=CHAT)).get_data()
    sent = orjson.loads(route.calls.last.request.content)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_stream_retries_once_without_stream_options_when_rejected(
    client: Client, upstream: respx.MockRouter
) -> None:
    rejected = httpx.Response(
        400, json={"error": {"message": "Unrecognized argument: stream_options"}}
    )
    route = upstream.post("/chat/completions").mock(
        side_effect=[rejected, stream_of("ok", usage=False), stream_of("again", usage=False)]
    )
    events = parse_events(await (await client.post("/api/chat/stream", json=CHAT)).get_data())
    assert events[-1][0] == "done"
    assert events[-1][1]["message"]["content"] == "ok"
    assert events[-1][1]["usage"] is None
    first, second = (orjson.loads(c.request.content) for c in route.calls)
    assert "stream_options" in first
    assert "stream_options" not in second
    # Learned once: the next stream does not pay for the refusal again.
    await (await client.post("/api/chat/stream", json=CHAT)).get_data()
    assert route.call_count == 3
    assert "stream_options" not in orjson.loads(route.calls.last.request.content)


async def test_stream_does_not_retry_other_rejections(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(
        400, json={"error": {"message": "context too long"}}
    )
    response = await client.post("/api/chat/stream", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 400, "UPSTREAM_REJECTED")
    assert route.call_count == 1


ERROR_TABLE = [
    (401, 502, "UPSTREAM_AUTH"),
    (403, 502, "UPSTREAM_AUTH"),
    (429, 429, "UPSTREAM_RATE_LIMITED"),
    (400, 400, "UPSTREAM_REJECTED"),
    (404, 400, "UPSTREAM_REJECTED"),
    (422, 400, "UPSTREAM_REJECTED"),
    (500, 502, "UPSTREAM_ERROR"),
    (503, 502, "UPSTREAM_ERROR"),
]


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(("upstream_status", "status", "code"), ERROR_TABLE)
async def test_upstream_error_status_maps_to_our_error(
    client: Client,
    upstream: respx.MockRouter,
    path: str,
    upstream_status: int,
    status: int,
    code: str,
) -> None:
    upstream.post("/chat/completions").respond(upstream_status, json={"error": {"message": "nope"}})
    response = await client.post(path, json=CHAT)
    assert_error(response.status_code, await response.get_data(), status, code)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
async def test_rate_limit_passes_retry_after_on(
    client: Client, upstream: respx.MockRouter, path: str
) -> None:
    upstream.post("/chat/completions").respond(
        429, headers={"Retry-After": "17"}, json={"error": {"message": "slow down"}}
    )
    response = await client.post(path, json=CHAT)
    assert_error(response.status_code, await response.get_data(), 429, "UPSTREAM_RATE_LIMITED")
    assert response.headers["Retry-After"] == "17"


async def test_upstream_rejection_message_is_passed_on_without_secrets(
    client: Client, upstream: respx.MockRouter
) -> None:
    message = f"Model 'nope' not found. Incorrect API key provided: {SECRET}. Also sk-proj-abcdefghijklmnop."
    upstream.post("/chat/completions").respond(404, json={"error": {"message": message}})
    response = await client.post("/api/chat", json=CHAT)
    error = assert_error(response.status_code, await response.get_data(), 400, "UPSTREAM_REJECTED")
    assert "Model 'nope' not found" in error["message"]
    assert "sk-proj-abcdefghijklmnop" not in error["message"]


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (httpx.ConnectError("refused"), 502, "UPSTREAM_UNREACHABLE"),
        (httpx.ConnectTimeout("slow"), 504, "UPSTREAM_TIMEOUT"),
        (httpx.ReadTimeout("slow"), 504, "UPSTREAM_TIMEOUT"),
        (httpx.RemoteProtocolError("bad"), 502, "UPSTREAM_ERROR"),
    ],
)
async def test_transport_failures_map_to_our_error(
    client: Client, upstream: respx.MockRouter, path: str, exc: Exception, status: int, code: str
) -> None:
    upstream.post("/chat/completions").mock(side_effect=exc)
    response = await client.post(path, json=CHAT)
    assert_error(response.status_code, await response.get_data(), status, code)


async def test_timeout_before_the_first_chunk_is_an_http_504(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(httpx.ReadTimeout("no first byte"))
    )
    response = await client.post("/api/chat/stream", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 504, "UPSTREAM_TIMEOUT")


@pytest.mark.parametrize(
    ("pieces", "why"),
    [
        (
            (
                b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
                b'data: {"error":{"message":"overloaded"}}\n\n',
            ),
            "in-band",
        ),
        (
            (
                b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
                b"data: {not json\n\n",
            ),
            "malformed",
        ),
        ((b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',), "truncated"),
        (
            (
                b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
                httpx.ReadError("reset"),
            ),
            "cut",
        ),
    ],
)
async def test_failure_after_the_stream_began_is_an_error_event(
    client: Client, upstream: respx.MockRouter, pieces: tuple[bytes, ...], why: str
) -> None:
    upstream.post("/chat/completions").mock(return_value=sse_response(*pieces))
    response = await client.post("/api/chat/stream", json=CHAT, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 200
    events = parse_events(await response.get_data())
    assert events[0] == ("chunk", {"delta": "a"})
    kind, error = events[-1]
    assert kind == "error", why
    assert error["error"]["code"] == "UPSTREAM_ERROR"
    assert error["error"]["request_id"] == "req-42"
    assert not any(k == "done" for k, _ in events)


async def test_finish_reason_without_done_marker_still_completes(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=sse_response(
            b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}'
        )
    )
    events = parse_events(await (await client.post("/api/chat/stream", json=CHAT)).get_data())
    assert events[-1][0] == "done"


async def test_idle_stream_gets_ping_comments() -> None:
    with respx.mock(base_url=UPSTREAM) as upstream:
        upstream.post("/chat/completions").mock(
            return_value=sse_response(*completion_chunks(["a", "b"]), delay=0.25)
        )
        app = create_app(
            make_settings(sse_ping_seconds=0.05),
            transport=httpx.MockTransport(upstream.async_handler),
        )
        async with app.test_app() as test_app:
            response = await test_app.test_client().post("/api/chat/stream", json=CHAT)
            events = parse_events(await response.get_data())
    assert ("comment", "ping") in events
    assert "".join(e[1]["delta"] for e in events if e[0] == "chunk") == "ab"
    assert events[-1][0] == "done"


async def test_upstream_silent_mid_stream_ends_with_an_idle_timeout_error() -> None:
    chunks = completion_chunks(["a", "b"])
    body = ChunkStream([b"".join(chunks[:2]), *chunks[2:]], delay=30)  # silent 30 s after "a"
    with respx.mock(base_url=UPSTREAM) as upstream:
        upstream.post("/chat/completions").respond(
            headers={"Content-Type": "text/event-stream"}, stream=body
        )
        app = create_app(
            make_settings(sse_ping_seconds=0.1, request_timeout_seconds=0.35),
            transport=httpx.MockTransport(upstream.async_handler),
        )
        async with app.test_app() as test_app:
            response = await test_app.test_client().post("/api/chat/stream", json=CHAT)
            events = parse_events(await response.get_data())
    assert events[0] == ("chunk", {"delta": "a"})
    assert ("comment", "ping") in events
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert body.closed


async def test_missing_key_for_openai_is_not_configured_and_calls_nothing() -> None:
    with respx.mock(assert_all_mocked=True):
        app = create_app(
            make_settings(openai_api_key=None, openai_api_base="https://api.openai.com/v1")
        )
        async with app.test_app() as test_app:
            for path in ("/api/chat", "/api/chat/stream"):
                response = await test_app.test_client().post(path, json=CHAT)
                error = assert_error(
                    response.status_code, await response.get_data(), 503, "NOT_CONFIGURED"
                )
                assert "OPENAI_API_KEY" in error["message"]


async def test_local_server_without_key_is_called_without_authorization() -> None:
    with respx.mock(base_url="http://localhost:11434/v1") as upstream:
        route = upstream.post("/chat/completions").respond(json=COMPLETION)
        settings = make_settings(openai_api_key="", openai_api_base="http://localhost:11434/v1")
        app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
        async with app.test_app() as test_app:
            assert (await test_app.test_client().post("/api/chat", json=CHAT)).status_code == 200
    assert "Authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b"{", "body"),
        (b"", "body"),
        (b'{"messages": []}', "messages"),
        (b'{"messages": [{"role": "tool", "content": "x"}]}', "messages.0.role"),
        (b'{"messages": [{"role": "user"}]}', "messages.0.content"),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "x"}], "top_p": -0.1}', "top_p"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
    ],
)
@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
async def test_invalid_request_is_400_with_field_details(
    client: Client, path: str, body: bytes, loc: str
) -> None:
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    error = assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
    assert loc in [d["loc"] for d in error["details"]]


async def test_body_over_the_cap_is_413() -> None:
    app = create_app(make_settings(max_body_bytes=1000))
    async with app.test_app() as test_app:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        response = await test_app.test_client().post("/api/chat", json=big)
        assert_error(response.status_code, await response.get_data(), 413, "REQUEST_TOO_LARGE")


async def test_models_lists_upstream_models_default_first_and_caches(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").respond(
        json={"data": [{"id": "zeta"}, {"id": "gpt-4o-mini"}, {"id": "alpha"}]}
    )
    first = await (await client.get("/api/models")).get_json()
    second = await (await client.get("/api/models")).get_json()
    assert first == {"default": "gpt-4o-mini", "models": ["gpt-4o-mini", "alpha", "zeta"]}
    assert second == first
    assert route.call_count == 1


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(500), httpx.Response(200, json={"data": []}), httpx.ConnectError("x")],
)
async def test_models_falls_back_to_the_configured_model(
    client: Client, upstream: respx.MockRouter, failure: httpx.Response | Exception
) -> None:
    upstream.get("/models").mock(side_effect=[failure])
    assert await (await client.get("/api/models")).get_json() == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini"],
    }


async def test_one_access_log_line_per_request_without_secrets_or_messages(
    client: Client, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.post("/chat/completions").mock(return_value=stream_of("a", "b"))
    caplog.set_level(logging.DEBUG)
    body = {"messages": [{"role": "user", "content": "my private question"}]}
    await (
        await client.post("/api/chat/stream", json=body, headers={"X-Request-ID": "abc-1"})
    ).get_data()
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quartchat.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "abc-1"
    assert (line["method"], line["path"], line["status"], line["upstream_status"]) == (
        "POST",
        "/api/chat/stream",
        200,
        200,
    )
    assert line["ttft_ms"] is not None and line["duration_ms"] >= line["ttft_ms"]
    assert line["tokens"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in everything
    assert "my private question" not in everything


async def test_cookies_an_upstream_sets_are_not_sent_back(
    client: Client, upstream: respx.MockRouter
) -> None:
    # One shared client serves every user: a cookie jar would carry one user's session to others.
    route = upstream.post("/chat/completions").respond(
        json=COMPLETION, headers={"Set-Cookie": "session=user-a; Path=/"}
    )
    for _ in range(2):
        assert (await client.post("/api/chat", json=CHAT)).status_code == 200
    assert "cookie" not in route.calls.last.request.headers


async def test_successful_health_checks_log_at_debug_so_they_do_not_drown_the_log(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="quartchat.access")
    await client.get("/health")
    await client.get("/api/no-such-route")
    levels = {
        orjson.loads(r.getMessage())["path"]: r.levelno
        for r in caplog.records
        if r.name == "quartchat.access"
    }
    assert levels == {"/health": logging.DEBUG, "/api/no-such-route": logging.INFO}
