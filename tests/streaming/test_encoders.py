"""The two wire formats a relayed stream can take."""

from __future__ import annotations

import orjson
import pytest

from quartchat.errors import APIError
from quartchat.schemas import ChatResponse
from quartchat.streaming.completion import Chunk, Completion
from quartchat.streaming.encoders import ChatEvents, OpenAIPassthrough, envelope
from quartchat.streaming.sse import SSEParser

from ..conftest import parse_events


def folded(*datas: str) -> tuple[list[Chunk], Completion]:
    batch = [Chunk(d, orjson.loads(d)) for d in datas]
    completion = Completion("asked")
    completion.fold(batch)
    return batch, completion


A = '{"id":"c","model":"m","created":5,"choices":[{"index":0,"delta":{"content":"a\\nb"}}]}'
TOOL = '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'


def test_chat_events_carry_the_new_text_then_the_envelope() -> None:
    batch, completion = folded(A, TOOL, USAGE)
    encoder = ChatEvents()
    assert parse_events(encoder.chunk(batch, completion)) == [("chunk", {"delta": "a\nb"})]
    assert encoder.chunk(batch, completion) == b""  # nothing new since
    assert parse_events(encoder.done(completion)) == [
        (
            "done",
            {
                "id": "c",
                "model": "m",
                "created": 5,
                "message": {"role": "assistant", "content": "a\nb"},
                "finish_reason": None,
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            },
        )
    ]


def test_an_envelope_without_upstream_labels_gets_an_id_and_a_time() -> None:
    _, completion = folded('{"choices":[{"index":0,"delta":{"content":"x"}}]}')
    ((_, done),) = parse_events(ChatEvents().done(completion))
    assert done["id"].startswith("chatcmpl-") and len(done["id"]) > 20
    assert done["created"] > 1_700_000_000
    assert done["model"] == "asked"


def test_passthrough_re_emits_every_payload_as_sent_tool_calls_included() -> None:
    multiline = '{"choices":\n[]}'
    batch, completion = folded(A, TOOL, USAGE, multiline)
    out = OpenAIPassthrough().chunk(batch, completion)
    parser = SSEParser()
    assert [e.data for e in parser.feed(out)] == [A, TOOL, USAGE, multiline]
    assert OpenAIPassthrough().done(completion) == b"data: [DONE]\n\n"


def test_passthrough_stops_before_a_malformed_chunk() -> None:
    batch = [Chunk(A, orjson.loads(A)), Chunk('{"choices":"x"}', {"choices": "x"})]
    completion = Completion("m")
    with pytest.raises(APIError):
        completion.fold(batch)
    assert SSEParser().feed(OpenAIPassthrough().chunk(batch, completion))[0].data == A
    assert len(SSEParser().feed(OpenAIPassthrough().chunk(batch, completion))) == 1


def test_errors_take_each_format_s_own_shape() -> None:
    error = APIError(502, "UPSTREAM_ERROR", "it broke")
    assert parse_events(ChatEvents().error(error, "r1")) == [
        ("error", {"error": {"code": "UPSTREAM_ERROR", "message": "it broke", "request_id": "r1"}})
    ]
    (event,) = SSEParser().feed(OpenAIPassthrough().error(error, "r1"))
    assert orjson.loads(event.data) == {
        "error": {
            "message": "it broke",
            "type": "server_error",
            "param": None,
            "code": "UPSTREAM_ERROR",
        }
    }


# As OpenAI sends a stream asked for usage: `"usage":null` last on every chunk, then the usage.
A_NULL = A[:-1] + ',"usage":null}'
TOOL_NULL = TOOL[:-1] + ',"usage":null}'


def test_passthrough_strips_what_asking_for_usage_added() -> None:
    batch, completion = folded(A_NULL, TOOL_NULL, USAGE)
    out = OpenAIPassthrough(strip_usage=True).chunk(batch, completion)
    assert [e.data for e in SSEParser().feed(out)] == [A, TOOL]
    assert completion.usage == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_passthrough_strips_a_usage_null_spelled_otherwise_and_keeps_the_rest() -> None:
    spaced = '{"id": "c", "usage": null, "choices": [{"index": 0, "delta": {"content": "x"}}]}'
    batch, completion = folded(spaced)
    (event,) = SSEParser().feed(OpenAIPassthrough(strip_usage=True).chunk(batch, completion))
    assert orjson.loads(event.data) == {
        "id": "c",
        "choices": [{"index": 0, "delta": {"content": "x"}}],
    }


def test_passthrough_keeps_usage_the_client_asked_for() -> None:
    batch, completion = folded(A_NULL, USAGE)
    out = OpenAIPassthrough().chunk(batch, completion)
    assert [e.data for e in SSEParser().feed(out)] == [A_NULL, USAGE]


def test_passthrough_keeps_usage_riding_on_a_chunk_with_choices() -> None:
    finish = (
        '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"total_tokens":3}}'
    )
    batch, completion = folded(finish)
    out = OpenAIPassthrough(strip_usage=True).chunk(batch, completion)
    assert [e.data for e in SSEParser().feed(out)] == [finish]


@pytest.mark.parametrize(
    "datas",
    [
        (A, USAGE),  # labelled, with usage
        ('{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}',),  # neither
    ],
)
def test_the_envelope_is_what_its_documented_model_makes_of_it(datas: tuple[str, ...]) -> None:
    # Built as a dict for speed: it must stay exactly what ChatResponse dumps, key order included.
    _, completion = folded(*datas)
    for fresh_id in (True, False):
        built = envelope(completion, fresh_id=fresh_id)
        dumped = ChatResponse.model_validate(built).model_dump()
        assert orjson.dumps(built) == orjson.dumps(dumped)
