"""The fake upstream is only worth its tests if it is OpenAI-compatible: the official SDK says so."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from .fake_upstream import FakeUpstream


@pytest.fixture
def sdk(fake: FakeUpstream) -> Iterator[tuple[openai.OpenAI, FakeUpstream]]:
    client = openai.OpenAI(base_url=fake.url, api_key="sk-fake", max_retries=0, timeout=5)
    yield client, fake
    client.close()


def test_the_sdk_streams_the_fakes_reply_with_usage(
    sdk: tuple[openai.OpenAI, FakeUpstream],
) -> None:
    client, fake = sdk
    stream = client.chat.completions.create(
        model="fake-large",
        messages=[{"role": "user", "content": "one two"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 3
    assert fake.chat_requests()[-1].headers["authorization"] == "Bearer sk-fake"


def test_the_sdk_reads_the_fakes_whole_completion_and_model_list(
    sdk: tuple[openai.OpenAI, FakeUpstream],
) -> None:
    client, _ = sdk
    completion = client.chat.completions.create(
        model="fake-small", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Echo: hi"
    assert completion.usage is not None
    assert {m.id for m in client.models.list()} == {"fake-large", "fake-small", "gpt-4o-mini"}


def test_the_sdk_sees_the_fakes_error_status_as_the_matching_exception(
    sdk: tuple[openai.OpenAI, FakeUpstream],
) -> None:
    client, fake = sdk
    fake.reject_stream_options = True
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="fake-large",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
