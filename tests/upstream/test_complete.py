"""`POST /api/chat` on the production path: the aiohttp transport and the fake upstream on a real
socket, answering with whole (non-streamed) completions of every shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from ..conftest import CHAT, assert_error
from ..fake_upstream import FakeUpstream, Reply


def answer(body: object) -> Reply:
    return Reply(chunks=[orjson.dumps(body)], headers={"Content-Type": "application/json"})


def completion(message: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-whole",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "served-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        **fields,
    }


async def chat(client: Client, **body: Any) -> tuple[int, str | bytes]:
    response = await client.post("/api/chat", json={**CHAT, **body})
    return response.status_code, await response.get_data()


async def test_a_whole_reply_arrives_over_the_production_transport(
    live_client: Client, fake: FakeUpstream
) -> None:
    status, body = await chat(live_client)
    assert status == 200, body
    reply = orjson.loads(body)
    assert reply["message"] == {"role": "assistant", "content": "Echo: Hello"}
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert fake.chat_requests()[-1].json["stream"] is False


async def test_a_refusal_is_the_reply_s_text(live_client: Client, fake: FakeUpstream) -> None:
    refusal = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    fake.reply_with(answer(completion(refusal)))
    status, body = await chat(live_client)
    assert status == 200, body
    assert orjson.loads(body)["message"]["content"] == "I can't help with that."


async def test_a_reply_without_text_is_an_empty_message(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(answer(completion({"role": "assistant", "content": None})))
    status, body = await chat(live_client)
    assert status == 200, body
    assert orjson.loads(body)["message"]["content"] == ""


async def test_a_reply_without_usage_has_null_usage(
    live_client: Client, fake: FakeUpstream
) -> None:
    fake.reply_with(answer(completion({"role": "assistant", "content": "Hi"})))
    status, body = await chat(live_client)
    assert status == 200, body
    assert orjson.loads(body)["usage"] is None


async def test_a_reply_without_labels_is_labelled_with_the_model_asked_for(
    live_client: Client, fake: FakeUpstream
) -> None:
    bare = {"choices": [{"message": {"content": "Hi"}}]}
    fake.reply_with(answer(bare))
    status, body = await chat(live_client, model="asked-model")
    assert status == 200, body
    reply = orjson.loads(body)
    assert (reply["id"], reply["model"], reply["finish_reason"]) == ("", "asked-model", None)
    assert reply["created"] > 1_700_000_000


NOT_A_COMPLETION = {
    "not JSON": b"<html>hello</html>",
    "no choices": b'{"id": "x", "object": "chat.completion"}',
    "empty choices": b'{"choices": []}',
    "a string choice": b'{"choices": ["Hi"]}',
    "a string message": b'{"choices": [{"message": "Hi"}]}',
    "numeric content": b'{"choices": [{"message": {"content": 5}}]}',
    "string usage counts": b'{"choices": [{"message": {"content": "Hi"}}], "usage": {"total_tokens": "a"}}',
    "a list": b"[1, 2]",
}


@pytest.mark.parametrize("body", NOT_A_COMPLETION.values(), ids=NOT_A_COMPLETION.keys())
async def test_a_reply_that_is_not_a_chat_completion_is_an_upstream_error(
    live_client: Client, fake: FakeUpstream, body: bytes
) -> None:
    fake.reply_with(Reply(chunks=[body], headers={"Content-Type": "application/json"}))
    status, reply = await chat(live_client)
    error = assert_error(status, reply, 502, "UPSTREAM_ERROR")
    assert "not a chat completion" in error["message"]
