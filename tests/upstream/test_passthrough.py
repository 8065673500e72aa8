"""The client's methods for /v1: a client's request sent as it is, the upstream's answer back
byte for byte, and the upstream's own errors kept (redacted) for /v1 to pass on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import respx

from quartchat.errors import APIError
from quartchat.upstream.client import UpstreamClient

from ..conftest import SECRET, make_settings

ANSWER = b'{"id": "c",  "object": "chat.completion", "x_vendor": 1.0, "choices": []}'


@pytest.fixture
async def client(upstream: respx.MockRouter) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(
        make_settings(max_tokens_limit=100), httpx.MockTransport(upstream.async_handler)
    )
    yield client
    await client.aclose()


async def test_a_whole_answer_comes_back_byte_for_byte(
    client: UpstreamClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions").respond(201, content=ANSWER)
    payload: dict[str, Any] = {"model": "m", "messages": [], "x_client": [1, 2.5, None]}
    assert await client.pass_whole(payload) == (201, ANSWER)
    assert orjson.loads(route.calls.last.request.content) == payload


async def test_embeddings_go_to_their_own_path(
    client: UpstreamClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/embeddings").respond(content=b'{"data": []}')
    assert await client.pass_whole({"model": "e", "input": "x"}, "embeddings") == (
        200,
        b'{"data": []}',
    )


async def test_an_upstream_rejection_keeps_its_error_object_redacted(
    client: UpstreamClient, upstream: respx.MockRouter
) -> None:
    error = {"message": f"too long ({SECRET})", "type": "invalid_request_error", "param": None}
    error["code"] = "context_length_exceeded"
    upstream.post("/chat/completions").respond(400, json={"error": error})
    with pytest.raises(APIError) as raised:
        await client.pass_whole({"model": "m"})
    assert raised.value.upstream_status == 400
    assert raised.value.upstream_error == {**error, "message": "too long ([redacted])"}


async def test_an_upstream_rejection_in_another_dialect_becomes_openai_s_shape(
    client: UpstreamClient, upstream: respx.MockRouter
) -> None:
    upstream.post("/chat/completions").respond(422, json={"detail": "bad field"})
    with pytest.raises(APIError) as raised:
        await client.pass_whole({"model": "m"})
    assert raised.value.upstream_error == {
        "message": "bad field",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refusal_of_our_key_keeps_no_upstream_error_to_pass_on(
    client: UpstreamClient, upstream: respx.MockRouter, status: int
) -> None:
    upstream.post("/chat/completions").respond(status, json={"error": {"message": "bad key"}})
    with pytest.raises(APIError) as raised:
        await client.pass_whole({"model": "m"})
    assert (raised.value.code, raised.value.upstream_error) == ("UPSTREAM_AUTH", None)


@pytest.mark.parametrize(
    ("sent", "limited"),
    [
        ({}, {"max_tokens": 100}),
        ({"max_tokens": 500}, {"max_tokens": 100}),
        ({"max_tokens": 50}, {"max_tokens": 50}),
        ({"max_completion_tokens": 500}, {"max_completion_tokens": 100}),
    ],
)
def test_max_tokens_limit_caps_the_field_the_client_uses(
    client: UpstreamClient, sent: dict[str, Any], limited: dict[str, Any]
) -> None:
    client.limit_passed(sent)
    assert sent == limited
