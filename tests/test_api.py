from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest
import respx
from quart.typing import TestClientProtocol as Client

from quartchat import create_app, errors
from quartchat.upstream.registry import down_warning

from .conftest import CHAT, SECRET, assert_error, make_settings

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


async def test_each_invalid_field_is_described_by_its_location_message_and_type(
    client: Client,
) -> None:
    body = {"messages": [{"role": "tool", "content": "x"}], "temperature": "hot"}
    response = await client.post("/api/chat", json=body)
    error = assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
    assert {d["loc"]: d["type"] for d in error["details"]} == {
        "messages.0.role": "literal_error",
        "temperature": "float_type",
    }
    assert all(set(d) == {"loc", "msg", "type"} and d["msg"] for d in error["details"])


async def test_errors_are_sent_as_json(client: Client, upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(500, json={"error": {"message": "down"}})
    for response in (
        await client.post("/api/chat", json=CHAT),
        await client.post("/api/chat", json={"messages": []}),
        await client.get("/api/no-such-route"),
    ):
        assert response.status_code >= 400
        assert response.mimetype == "application/json"


async def test_body_over_the_cap_is_413() -> None:
    app = create_app(make_settings(max_body_bytes=1000))
    async with app.test_app() as test_app:
        big = {"messages": [{"role": "user", "content": "x" * 2000}]}
        response = await test_app.test_client().post("/api/chat", json=big)
        assert_error(response.status_code, await response.get_data(), 413, "REQUEST_TOO_LARGE")


async def test_a_client_that_stalls_in_an_oversized_body_still_gets_its_413(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(errors, "DISCARD_SECONDS", 0.1)  # how long the rest of it is waited for
    app = create_app(make_settings(max_body_bytes=1000))
    headers = {"Content-Type": "application/json", "Content-Length": "5000"}
    async with (
        app.test_app() as test_app,
        test_app.test_client().request("/api/chat", method="POST", headers=headers) as connection,
    ):
        await connection.send(b'{"messages": [' + b" " * 2000)  # and nothing more
        body = await asyncio.wait_for(connection.receive(), 10)
        response = await connection.as_response()
        assert_error(response.status_code, body, 413, "REQUEST_TOO_LARGE")


async def test_models_lists_upstream_models_default_first_and_caches(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.get("/models").respond(
        json={"data": [{"id": "zeta"}, {"id": "gpt-4o-mini"}, {"id": "alpha"}]}
    )
    first = await (await client.get("/api/models")).get_json()
    second = await (await client.get("/api/models")).get_json()
    assert first == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini", "alpha", "zeta"],
        "any_model": True,
        "warnings": [],
        "prices": {},
    }
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
    down = isinstance(failure, Exception) or failure.status_code >= 400
    assert await (await client.get("/api/models")).get_json() == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini"],
        "any_model": True,
        "warnings": [down_warning("default")] if down else [],
        "prices": {},
    }


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


@pytest.mark.parametrize(
    ("sent", "passed_on"),
    [
        ("17", "17"),
        ("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT"),
        ("1234567890", "1234567890"),
        ("12345678901", None),
        ("soon", None),
        ("1.5", None),
        ("-3", None),
        ("17, 18", None),
    ],
)
async def test_retry_after_is_passed_on_only_as_seconds_or_an_http_date(
    client: Client, upstream: respx.MockRouter, sent: str, passed_on: str | None
) -> None:
    upstream.post("/chat/completions").respond(
        429, headers={"Retry-After": sent}, json={"error": {"message": "slow down"}}
    )
    response = await client.post("/api/chat", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 429, "UPSTREAM_RATE_LIMITED")
    assert response.headers.get("Retry-After") == passed_on


async def test_an_upstream_html_error_page_becomes_its_title(
    client: Client, upstream: respx.MockRouter
) -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title><style>body{}</style></head>"
        "<body><h1>502 Bad Gateway</h1><script>track()</script>" + "<p>padding</p>" * 500
    )
    upstream.post("/chat/completions").respond(
        502, text=page, headers={"Content-Type": "text/html"}
    )
    response = await client.post("/api/chat", json=CHAT)
    error = assert_error(response.status_code, await response.get_data(), 502, "UPSTREAM_ERROR")
    assert error["message"] == "The upstream failed (502): 502 Bad Gateway"


async def test_a_long_upstream_error_text_is_cut(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(400, json={"error": {"message": "x" * 5000}})
    response = await client.post("/api/chat", json=CHAT)
    error = assert_error(response.status_code, await response.get_data(), 400, "UPSTREAM_REJECTED")
    assert 100 < len(error["message"]) <= 300
    assert error["message"].endswith("…")


@pytest.mark.parametrize(
    "echoed",
    [
        "Authorization: Bearer tok-without-a-known-prefix-123",
        "the token Bearer tok-without-a-known-prefix-123 was refused",
        "bad header authorization=Basic dXNlcjpwYXNz",
        "Incorrect API key provided: KEY",
        "x-api-key: KEY",
    ],
)
async def test_no_credential_echoed_by_the_upstream_reaches_the_client(
    upstream: respx.MockRouter, echoed: str
) -> None:
    key = "0123456789abcdef0123456789abcdef"  # an Azure-style key, not shaped like sk-…
    # A 400, whose message is passed on (a 401's is not: tests/upstream/test_auth_failure.py).
    upstream.post("/chat/completions").respond(
        400, json={"error": {"message": echoed.replace("KEY", key)}}
    )
    app = create_app(
        make_settings(openai_api_key=key), transport=httpx.MockTransport(upstream.async_handler)
    )
    async with app.test_app() as test_app:
        response = await test_app.test_client().post("/api/chat", json=CHAT)
        body = await response.get_data()
    error = assert_error(response.status_code, body, 400, "UPSTREAM_REJECTED")
    assert key.encode() not in body
    assert "tok-without" not in error["message"] and "dXNlcjpwYXNz" not in error["message"]
    assert "[redacted]" in error["message"]


@pytest.mark.parametrize("max_tokens", [2**63, 2**64, 10**30])
async def test_max_tokens_beyond_what_can_be_sent_on_is_a_400(
    client: Client, max_tokens: int
) -> None:
    body = b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": %d}' % max_tokens
    response = await client.post(
        "/api/chat", data=body, headers={"Content-Type": "application/json"}
    )
    error = assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
    assert [d["loc"] for d in error["details"]] == ["max_tokens"]


async def test_the_largest_max_tokens_allowed_reaches_the_upstream(
    client: Client, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    response = await client.post("/api/chat", json={**CHAT, "max_tokens": 2**31 - 1})
    assert response.status_code == 200
    assert orjson.loads(route.calls.last.request.content)["max_tokens"] == 2**31 - 1


async def test_a_max_tokens_written_as_a_whole_float_is_sent_on_as_an_integer(
    client: Client, upstream: respx.MockRouter
) -> None:
    # JSON Schema counts 512.0 as an integer, so a client generated from the schema may send it.
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    response = await client.post("/api/chat", json={**CHAT, "max_tokens": 512.0})
    assert response.status_code == 200
    sent = orjson.loads(route.calls.last.request.content)["max_tokens"]
    assert (sent, type(sent)) == (512, int)


async def test_a_max_tokens_with_a_fraction_is_a_400(client: Client) -> None:
    response = await client.post("/api/chat", json={**CHAT, "max_tokens": 1.5})
    error = assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
    assert [d["loc"] for d in error["details"]] == ["max_tokens"]


async def test_the_access_line_of_a_whole_chat_has_the_real_upstream_status(
    client: Client, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quartchat.access")
    upstream.post("/chat/completions").respond(201, json=COMPLETION)
    await client.post("/api/chat", json=CHAT, headers={"X-Request-ID": "whole-1"})
    (line,) = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quartchat.access"]
    assert (line["status"], line["upstream_status"]) == (200, 201)
    assert line["tokens"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("upstream_status", "status"), [(401, 502), (429, 429), (404, 400), (503, 502)]
)
async def test_the_access_line_of_a_refused_chat_has_the_upstream_status(
    client: Client,
    upstream: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    path: str,
    upstream_status: int,
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="quartchat.access")
    upstream.post("/chat/completions").respond(upstream_status, json={"error": {"message": "no"}})
    await client.post(path, json=CHAT)
    (line,) = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "quartchat.access"]
    assert (line["status"], line["upstream_status"]) == (status, upstream_status)


@pytest.mark.parametrize(("asked", "sent"), [(2**31 - 1, 1000), (None, 1000), (300, 300)])
async def test_max_tokens_limit_clamps_what_reaches_the_upstream(
    upstream: respx.MockRouter, asked: int | None, sent: int
) -> None:
    app = create_app(
        make_settings(max_tokens_limit=1000), transport=httpx.MockTransport(upstream.async_handler)
    )
    route = upstream.post("/chat/completions").respond(json=COMPLETION)
    body = {**CHAT, "max_tokens": asked} if asked else CHAT
    async with app.test_app():
        assert (await app.test_client().post("/api/chat", json=body)).status_code == 200
    assert orjson.loads(route.calls.last.request.content)["max_tokens"] == sent


async def test_a_whole_chat_past_max_reply_seconds_is_a_504_reply_too_long(
    upstream: respx.MockRouter,
) -> None:
    async def never_answers(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    upstream._assert_all_called = False  # the call never completes, so respx never records it
    upstream.post("/chat/completions").mock(side_effect=never_answers)
    app = create_app(
        make_settings(max_reply_seconds=0.2), transport=httpx.MockTransport(upstream.async_handler)
    )
    async with app.test_app(), asyncio.timeout(10):  # (a deadline for the test, not the app)
        response = await app.test_client().post("/api/chat", json=CHAT)
    assert_error(response.status_code, await response.get_data(), 504, "REPLY_TOO_LONG")
