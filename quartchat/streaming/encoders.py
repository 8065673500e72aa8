"""What a relayed stream looks like to its client: one encoder per wire format.

`ChatEvents` is ours (`chunk` / `done` / `error`, docs/api.md). `OpenAIPassthrough` re-emits the
upstream's own `data:` payloads byte for byte -- tool calls, `n>1` choices and every field we do
not read included -- for an OpenAI-compatible gateway; the relay still folds each chunk, so usage
and finish reason are known either way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import orjson

from ..errors import APIError
from ..schemas import AssistantMessage, ChatResponse, ChatUsage
from .completion import Chunk, Completion
from .sse import PING, encode


def envelope(completion: Completion) -> ChatResponse:
    """The reply as one `ChatResponse`: the `done` event's data, and what `/api/chat` returns."""
    usage = completion.usage
    return ChatResponse.model_construct(
        id=completion.id or f"chatcmpl-{uuid.uuid4().hex}",
        model=completion.model,
        created=completion.created or int(time.time()),
        message=AssistantMessage(content=completion.text),
        finish_reason=completion.finish_reason,
        usage=ChatUsage.model_construct(None, **usage) if usage else None,
    )


class ChatEvents:
    """Our events: text deltas that arrived in one read go out as one `chunk` event."""

    content_type = "text/event-stream; charset=utf-8"
    ping = PING

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        text = completion.take_text()
        return encode("chunk", {"delta": text}) if text else b""

    def done(self, completion: Completion) -> bytes:
        return encode("done", envelope(completion).model_dump())

    def error(self, error: APIError, request_id: str) -> bytes:
        return encode("error", error.payload(request_id))


class OpenAIPassthrough:
    """The upstream's chunks as it sent them (re-framed: one `data:` line per line of data)."""

    content_type = "text/event-stream; charset=utf-8"
    ping = PING

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        # Only what the fold accepted: after a malformed chunk the stream ends with an error.
        return b"".join(_frame(chunk.data) for chunk in batch[: completion.folded])

    def done(self, completion: Completion) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: APIError, request_id: str) -> bytes:
        # OpenAI's own mid-stream error shape, which its SDKs raise as an APIError.
        body = {
            "error": {
                "message": error.message,
                "type": error.code.lower(),
                "code": error.code,
                "request_id": request_id,
            }
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"


def _frame(data: str) -> bytes:
    if "\n" in data:  # a multi-line event: each line is a `data:` field again
        return b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
    return b"data: " + data.encode() + b"\n\n"
