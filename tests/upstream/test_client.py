"""The upstream client: what it remembers (models refusing `stream_options`, the model list) and
how it talks to the upstream (content type, timeout, connection cap)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import respx
from quart.typing import TestClientProtocol as Client

from quartchat import create_app
from quartchat.schemas import ChatRequest
from quartchat.upstream import client as client_module
from quartchat.upstream.registry import down_warning

from ..conftest import CHAT, LiveClient, assert_error, make_settings, parse_events
from ..fake_upstream import FakeUpstream, Reply, completion_chunks


class Clock:
    """Stands in for the client module's `time`, so expiry can be tested to the second."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(client_module, "time", clock)
    return clock


async def chat_in(client: Client, model: str) -> list[tuple[str, object]]:
    body = {**CHAT, "model": model}
    return parse_events(await (await client.post("/api/chat/stream", json=body)).get_data())


def asked_for_usage(fake: FakeUpstream) -> list[bool]:
    return [("stream_options" in r.json) for r in fake.chat_requests()]


async def test_a_refusal_of_stream_options_is_retried_without_them_and_remembered(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.models_rejecting_stream_options = {"old-model"}
    for _ in range(2):
        events = await chat_in(live_client, "old-model")
        assert events[-1][0] == "done"
    assert asked_for_usage(fake) == [True, False, False]


REFUSALS = {
    "FastAPI's 422 naming the field": (
        422,
        b'{"detail": [{"loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]}',
    ),
    "a 400 naming only include_usage": (
        400,
        b'{"error": {"message": "Unrecognized argument: include_usage"}}',
    ),
}


@pytest.mark.parametrize(("status", "body"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refusal_in_another_dialect_is_retried_without_stream_options_too(
    live_client: Client, fake: FakeUpstream, status: int, body: bytes
) -> None:
    fake.reply_with(
        Reply(status=status, chunks=[body], headers={"Content-Type": "application/json"})
    )
    events = await chat_in(live_client, "old-model")
    assert events[-1][0] == "done"
    assert asked_for_usage(fake) == [True, False]


async def test_one_model_refusing_stream_options_changes_nothing_for_other_models(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.models_rejecting_stream_options = {"old-model"}
    await chat_in(live_client, "old-model")
    events = await chat_in(live_client, "new-model")
    assert asked_for_usage(fake) == [True, False, True]
    assert events[-1][1]["usage"] is not None  # type: ignore[index]


async def test_a_refusal_is_forgotten_after_an_hour_so_an_upgraded_server_gives_usage(
    live_client: Client, fake: FakeUpstream, clock: Clock
) -> None:
    fake.models_rejecting_stream_options = {"old-model"}
    await chat_in(live_client, "old-model")
    clock.now += client_module.STREAM_OPTIONS_MEMORY_SECONDS - 1
    await chat_in(live_client, "old-model")
    fake.models_rejecting_stream_options = set()
    clock.now += 2
    await chat_in(live_client, "old-model")
    assert asked_for_usage(fake) == [True, False, False, True]


async def test_the_memory_of_refusals_is_bounded(live: LiveClient, fake: FakeUpstream) -> None:
    fake.reject_stream_options = True
    async with live() as client:
        upstream = client.app.extensions["upstream"]
        for i in range(client_module.STREAM_OPTIONS_MEMORY_SIZE + 3):
            upstream._no_stream_options[f"m{i}"] = 1e18
        await chat_in(client, "one-more")
        assert len(upstream._no_stream_options) == client_module.STREAM_OPTIONS_MEMORY_SIZE
        assert "one-more" in upstream._no_stream_options
        assert "m0" not in upstream._no_stream_options


MODELS = {"data": [{"id": "zeta"}, {"id": "gpt-4o-mini"}, {"id": "alpha"}]}


async def models(client: Client) -> object:
    return orjson.loads(await (await client.get("/api/models")).get_data())


async def test_the_model_list_is_cached_for_exactly_the_configured_time(
    upstream: respx.MockRouter, clock: Clock
) -> None:
    route = upstream.get("/models").respond(json=MODELS)
    app = create_app(
        make_settings(models_cache_seconds=300),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert await models(client) == {
            "default": "gpt-4o-mini",
            "models": ["gpt-4o-mini", "alpha", "zeta"],
            "any_model": True,
            "warnings": [],
            "prices": {},
        }
        clock.now += 299
        await models(client)
        assert route.call_count == 1
        clock.now += 2
        await models(client)
        assert route.call_count == 2


async def test_a_failed_model_list_is_retried_after_thirty_seconds(
    upstream: respx.MockRouter, clock: Clock
) -> None:
    route = upstream.get("/models").mock(
        side_effect=[httpx.Response(500), httpx.Response(200, json=MODELS)]
    )
    app = create_app(
        make_settings(models_cache_seconds=300),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert await models(client) == {
            "default": "gpt-4o-mini",
            "models": ["gpt-4o-mini"],
            "any_model": True,
            "warnings": [down_warning("default")],
            "prices": {},
        }
        clock.now += 29.9
        await models(client)
        assert route.call_count == 1
        clock.now += 0.2
        assert await models(client) == {
            "default": "gpt-4o-mini",
            "models": ["gpt-4o-mini", "alpha", "zeta"],
            "any_model": True,
            "warnings": [],
            "prices": {},
        }


async def test_model_entries_without_an_id_are_skipped(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json={"data": [{"id": "alpha"}, {"object": "model"}]})
    assert await models(client) == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini", "alpha"],
        "any_model": True,
        "warnings": [],
        "prices": {},
    }


async def test_requests_to_the_upstream_are_json_with_its_content_type(
    live_client: Client, fake: FakeUpstream
) -> None:
    await chat_in(live_client, "m")
    assert fake.chat_requests()[-1].headers["content-type"] == "application/json"


async def test_the_request_timeout_setting_is_the_upstream_client_s_timeout(
    live: LiveClient,
) -> None:
    async with live(request_timeout_seconds=7.5) as client:
        assert client.app.extensions["upstream"].http.timeout == httpx.Timeout(7.5)


async def chat_beside_a_busy_stream(client: Client) -> tuple[int, str | bytes]:
    """`POST /api/chat` while a stream holds a connection to the upstream."""
    async with client.request(
        "/api/chat/stream", method="POST", headers={"Content-Type": "application/json"}
    ) as busy:
        await busy.send(orjson.dumps(CHAT))
        await busy.send_complete()
        received = b""
        while b"event: chunk" not in received:
            received += await asyncio.wait_for(busy.receive(), 5)
        response = await client.post("/api/chat", json=CHAT)
        await busy.disconnect()
        return response.status_code, await response.get_data()


SLOW_STREAM = Reply(chunks=completion_chunks([f"w{i} " for i in range(100)]), delay=0.05)


async def test_with_every_upstream_connection_busy_a_request_waits_only_the_timeout(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(SLOW_STREAM)
    async with live(upstream_max_connections=1, request_timeout_seconds=0.5) as client:
        status, body = await chat_beside_a_busy_stream(client)
    assert_error(status, body, 504, "UPSTREAM_TIMEOUT")


async def test_a_request_gets_its_own_connection_while_another_is_busy(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(SLOW_STREAM)
    async with live(request_timeout_seconds=0.5) as client:
        status, body = await chat_beside_a_busy_stream(client)
    assert status == 200, body


async def test_a_cookie_one_reply_sets_is_not_sent_with_the_model_list_request(
    fake: FakeUpstream,
) -> None:
    # httpx's client keeps the cookies of every response it sends for, and `get()` merges them
    # into the next request: the shared model-list request would carry one user's cookie. (A
    # host name: cookie jars are pickier about IP addresses, upstreams have names.)
    base = fake.url.replace("127.0.0.1", "localhost")
    fake.reply_with(
        Reply(
            chunks=[
                orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "Hi"}}]})
            ],
            headers={"Content-Type": "application/json", "Set-Cookie": "session=alice; Path=/"},
        )
    )
    upstream = client_module.UpstreamClient(make_settings(openai_api_base=base))
    try:
        await upstream.complete(ChatRequest.model_validate(CHAT))
        await upstream.models()
    finally:
        await upstream.aclose()
    assert [r.path for r in fake.requests] == ["/v1/chat/completions", "/v1/models"]
    assert [r.headers.get("cookie") for r in fake.requests] == [None, None]
