"""What a relayed stream looks like to its client: one encoder per wire format.

`ChatEvents` is ours (`chunk` / `done` / `error`, docs/api.md). `OpenAIPassthrough` re-emits the
upstream's own `data:` payloads byte for byte -- tool calls, `n>1` choices and every field we do
not read included -- for /v1 (blueprints/v1.py); the relay still folds each chunk, so usage and
finish reason are known either way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import APIError, openai_error
from .completion import Chunk, Completion
from .sse import PING, encode


def envelope(completion: Completion, *, fresh_id: bool = True) -> dict[str, Any]:
    """The reply as `ChatResponse` (its documented model) dumps it: the `done` event's data, and
    what `/api/chat` returns. Built as a dict: two models made and dumped per reply cost ten
    times as much. `fresh_id`: a reply the upstream did not label gets an id of its own (a
    stream's); else it keeps the empty one."""
    usage = completion.usage
    return {
        "id": completion.id or (f"chatcmpl-{uuid.uuid4().hex}" if fresh_id else ""),
        "model": completion.model,
        "created": completion.created or int(time.time()),
        "message": {"role": "assistant", "content": completion.text},
        "finish_reason": completion.finish_reason,
        # The fold keeps exactly ChatUsage's three counters, in its order (completion.py).
        "usage": dict(usage) if usage else None,
    }


class ChatEvents:
    """Our events: text deltas that arrived in one read go out as one `chunk` event."""

    content_type = "text/event-stream; charset=utf-8"
    ping = PING

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        text = completion.take_text()
        return encode("chunk", {"delta": text}) if text else b""

    def done(self, completion: Completion) -> bytes:
        return encode("done", envelope(completion))

    def error(self, error: APIError, request_id: str) -> bytes:
        return encode("error", error.payload(request_id))


class OpenAIPassthrough:
    """The upstream's chunks as it sent them (re-framed: one `data:` line per line of data).

    `strip_usage`: the usage was asked for on the client's behalf (`stream_options`), so what
    that adds is taken out again -- the usage-only chunk (empty `choices`) and the
    `"usage":null` OpenAI then puts on every other chunk -- and the client sees what it would
    have without it. Only a chunk that has a `usage` key costs more than a look-up.
    """

    __slots__ = ("strip_usage",)

    content_type = "text/event-stream; charset=utf-8"
    ping = PING

    def __init__(self, *, strip_usage: bool = False) -> None:
        self.strip_usage = strip_usage

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        # Only what the fold accepted: after a malformed chunk the stream ends with an error.
        folded = completion.folded
        if folded == 1:  # most reads hold one chunk: no generator, no join
            data = _without_usage(batch[0]) if self.strip_usage else batch[0].data
            return b"" if data is None else _frame(data)
        if self.strip_usage:
            kept = (_without_usage(chunk) for chunk in batch[:folded])
            return b"".join(_frame(data) for data in kept if data is not None)
        return b"".join(_frame(chunk.data) for chunk in batch[:folded])

    def done(self, completion: Completion) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, error: APIError, request_id: str) -> bytes:
        # OpenAI's own mid-stream error shape, which its SDKs raise as an APIError.
        return b"data: " + orjson.dumps(openai_error(error)[1]) + b"\n\n"


USAGE_NULL = ',"usage":null}'


def _without_usage(chunk: Chunk) -> str | None:
    """`chunk`'s data without what asking for usage added: None for the usage-only chunk."""
    obj = chunk.obj
    if "usage" not in obj:
        return chunk.data
    if obj["usage"] is not None:
        return None if not obj.get("choices") else chunk.data
    data = chunk.data
    if data.endswith(USAGE_NULL):  # as OpenAI writes it: the last field, no spaces
        return data[: -len(USAGE_NULL)] + "}"
    return orjson.dumps({k: v for k, v in obj.items() if k != "usage"}).decode()


def _frame(data: str) -> bytes:
    if "\n" in data:  # a multi-line event: each line is a `data:` field again
        return b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
    return f"data: {data}\n\n".encode()
