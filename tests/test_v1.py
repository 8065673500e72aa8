"""/v1 with the official openai SDK (and curl) against the running service, on a real socket, in
front of the fake upstream: what a team's tools see."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from quartchat.blueprints.v1 import _max_tokens

from .fake_upstream import FakeUpstream, Reply, completion_payloads, openai_chunk, split_words
from .service import Service

pytestmark = pytest.mark.e2e

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]
TOOLS: list[ChatCompletionFunctionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ADMIN = {"email": "admin@example.com", "password": "correct horse battery staple"}
KEY = "sk-e2e-test-key-0000000000"  # the service's upstream key (tests/service.py)


def framed(payloads: list[dict[str, Any] | bytes]) -> list[bytes]:
    """Chunk payloads as OpenAI frames them (compact JSON)."""
    return [p if isinstance(p, bytes) else openai_chunk(p) for p in payloads]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The module's fake upstream, as each test left it: reset."""
    yield upstream
    upstream.replies.clear()
    upstream.reject_stream_options = False
    upstream.openai_format = False


@pytest.fixture(scope="module")
def service(upstream: FakeUpstream) -> Iterator[Service]:
    """Without accounts (as /api: loopback), at most one upstream request at a time."""
    with Service(upstream.url, MAX_STREAMS_PER_USER="1", REQUEST_TIMEOUT_SECONDS="5") as service:
        yield service


@pytest.fixture
def sdk(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)


def test_the_models_are_listed(sdk: openai.OpenAI) -> None:
    assert {"fake-large", "fake-small", "gpt-4o-mini"} <= {m.id for m in sdk.models.list()}


def test_a_completion_comes_back_as_the_upstream_sent_it(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    reply = sdk.chat.completions.create(model="fake-small", messages=HELLO)
    assert reply.choices[0].message.content == "Echo: Hello"
    assert reply.model == "fake-small" and reply.usage is not None
    assert reply.usage.total_tokens == 7
    assert "stream_options" not in fake.chat_requests()[-1].json


def test_a_stream_is_what_the_client_would_have_had_without_the_usage_we_asked_for(
    service: Service, fake: FakeUpstream
) -> None:
    fake.openai_format = True
    body = {"model": "fake-large", "messages": HELLO, "stream": True}
    with httpx.Client(base_url=service.url) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    sent = fake.chat_requests()[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    # What the fake sends when no usage is asked for, as OpenAI would: byte for byte.
    plain = completion_payloads(split_words("Echo: Hello"), model="fake-large", usage=False)
    assert response.content == b"".join(framed(plain))


def test_a_stream_through_the_sdk_carries_its_text_and_the_usage_it_asks_for(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.openai_format = True
    chunks = list(
        sdk.chat.completions.create(
            model="fake-large",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])


def test_tool_calls_come_back_whole(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="fake-large", messages=HELLO, tools=TOOLS)
    (call,) = reply.choices[0].message.tool_calls or []
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_tool_calls_come_back_streamed(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    stream = sdk.chat.completions.create(
        model="fake-large",
        messages=HELLO,
        tools=TOOLS,
        stream=True,
    )
    calls = [call for c in stream for call in c.choices[0].delta.tool_calls or []]
    assert calls[0].function is not None and calls[0].function.name == "weather"
    arguments = "".join((c.function.arguments or "") if c.function else "" for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert fake.chat_requests()[-1].json["tools"] == TOOLS


def test_n_choices_come_back_each(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="fake-large", messages=HELLO, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]


def test_an_embedding(sdk: openai.OpenAI, fake: FakeUpstream) -> None:
    result = sdk.embeddings.create(model="fake-small", input=["one", "two"])
    assert [e.embedding for e in result.data] == [[0.25, -0.5, 0.0], [0.25, -0.5, 1.0]]
    assert result.usage.prompt_tokens == 6
    assert fake.requests[-1].json["input"] == ["one", "two"]


def test_a_field_the_client_sends_reaches_the_upstream_and_one_it_returns_the_client(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    whole = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-large",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
        "x_vendor": {"kept": True},
    }
    fake.reply_with(
        Reply(chunks=[json.dumps(whole).encode()], headers={"Content-Type": "application/json"})
    )
    reply = sdk.chat.completions.create(
        model="fake-large",
        messages=HELLO,
        seed=7,
        extra_body={"x_client": [1, 2.5, None]},
    )
    sent = fake.chat_requests()[-1].json
    assert (sent["seed"], sent["x_client"]) == (7, [1, 2.5, None])
    assert reply.model_extra == {"x_vendor": {"kept": True}}


def test_a_streamed_chunk_s_unknown_field_reaches_the_client(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-large",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
        "x_vendor": 5,
    }
    fake.reply_with(Reply(chunks=[openai_chunk(chunk), b"data: [DONE]\n\n"]))
    stream = sdk.chat.completions.create(
        model="fake-large",
        messages=HELLO,
        stream=True,
        extra_body={"x_client": "yes"},
    )
    (got,) = list(stream)
    assert got.model_extra == {"x_vendor": 5}
    assert fake.chat_requests()[-1].json["x_client"] == "yes"


def test_an_upstream_that_refuses_stream_options_is_asked_again_without_and_remembered(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    fake.reject_stream_options = True
    before = len(fake.chat_requests())
    for _ in range(2):
        chunks = list(sdk.chat.completions.create(model="fake-small", messages=HELLO, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: Hello"
    sent = [r.json for r in fake.chat_requests()[before:]]
    assert ["stream_options" in s for s in sent] == [True, False, False]


def test_an_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.code == "model_not_found"


def test_a_request_without_messages_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="fake-large", messages=[])
    assert raised.value.param == "messages"
    assert raised.value.body is not None


def test_an_upstream_rejection_reads_as_the_upstream_s_own(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    error = {
        "message": f"This model's maximum context length is 8192 tokens (key {KEY}).",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    body = json.dumps({"error": error}).encode()
    fake.reply_with(Reply(status=400, chunks=[body], headers={"Content-Type": "application/json"}))
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="fake-large", messages=HELLO)
    assert (raised.value.code, raised.value.param) == ("context_length_exceeded", "messages")
    assert "maximum context length" in raised.value.message
    assert KEY not in raised.value.response.text


def test_an_upstream_that_refuses_our_key_is_our_failure_not_the_user_s(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    body = b'{"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}'
    fake.reply_with(Reply(status=401, chunks=[body], headers={"Content-Type": "application/json"}))
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="fake-large", messages=HELLO)
    assert raised.value.status_code == 502 and raised.value.code == "UPSTREAM_AUTH"


def test_too_many_requests_at_once_is_a_rate_limit_with_retry_after(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    step = threading.Semaphore(0)
    first = framed(completion_payloads(["a", "b"], usage=False))
    fake.reply_with(Reply(chunks=first[:2], step=step))
    held = sdk.chat.completions.create(model="fake-large", messages=HELLO, stream=True)
    try:
        with pytest.raises(openai.RateLimitError) as raised:
            sdk.chat.completions.create(model="fake-large", messages=HELLO)
        assert raised.value.code == "rate_limit_exceeded"
        assert raised.value.response.headers["Retry-After"].isdigit()
    finally:
        step.release()
        held.close()


def test_an_error_after_the_stream_began_is_raised_by_the_sdk(
    sdk: openai.OpenAI, fake: FakeUpstream
) -> None:
    first = framed(completion_payloads(["a"], usage=False))[0]
    fake.reply_with(Reply(chunks=[first], cut=True))
    stream = sdk.chat.completions.create(model="fake-large", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert raised.value.code == "UPSTREAM_ERROR"


def test_unknown_routes_and_methods_answer_in_openai_s_shape(service: Service) -> None:
    with httpx.Client(base_url=service.url) as client:
        missing = client.post("/v1/responses", json={})
        wrong = client.get("/v1/chat/completions")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl here")
def test_curl_streams_a_completion(service: Service) -> None:
    body = json.dumps({"model": "fake-large", "messages": HELLO, "stream": True})
    run = subprocess.run(
        [
            *("curl", "-sSN", f"{service.url}/v1/chat/completions"),
            *("-H", "Content-Type: application/json", "-H", "Authorization: Bearer x", "-d", body),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    events = [line[6:] for line in run.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, events[:-1])
    )
    assert text == "Echo: Hello"


# -- with accounts: the user's API token, and nothing else -------------------------------------


@pytest.fixture(scope="module")
def accounts(upstream: FakeUpstream) -> Iterator[tuple[Service, str]]:
    """The service with accounts, and an API token of its admin."""
    env = {"AUTH_MODE": "accounts", "ADMIN_EMAIL": ADMIN["email"]}
    env["ADMIN_PASSWORD"] = ADMIN["password"]
    with Service(upstream.url, **env) as service, httpx.Client(base_url=service.url) as client:
        assert client.post("/api/auth/login", json=ADMIN).status_code == 200
        token: str = client.post("/api/auth/tokens", json={"name": "sdk"}).json()["token"]
        yield service, token


def test_with_accounts_the_api_token_is_the_key(accounts: tuple[Service, str]) -> None:
    service, token = accounts
    sdk = openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0)
    reply = sdk.chat.completions.create(model="fake-large", messages=HELLO)
    assert reply.choices[0].message.content == "Echo: Hello"


@pytest.mark.parametrize("key", ["qc_not-a-real-token", "sk-someone-else-s-openai-key"])
def test_with_accounts_another_key_is_an_authentication_error(
    accounts: tuple[Service, str], key: str
) -> None:
    sdk = openai.OpenAI(base_url=accounts[0].url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.models.list()
    assert raised.value.code == "invalid_api_key"


def test_with_accounts_a_session_cookie_is_not_a_key(accounts: tuple[Service, str]) -> None:
    with httpx.Client(base_url=accounts[0].url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        assert browser.get("/api/auth/me").status_code == 200
        response = browser.get("/v1/models")
    error: dict[str, Any] = response.json()["error"]
    assert response.status_code == 401 and error["code"] == "invalid_api_key"


def test_a_budget_reserves_the_reply_tokens_the_client_asks_for() -> None:
    assert _max_tokens({"max_completion_tokens": 300, "max_tokens": 50}) == 300
    assert _max_tokens({"max_tokens": 50}) == 50
    assert _max_tokens({"max_tokens": "50"}) is None  # the upstream judges that, not the budget
    assert _max_tokens({}) is None
