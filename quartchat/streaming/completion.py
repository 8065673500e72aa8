"""The chat-completion chunk format, and the pure fold of a stream of chunks -- or of a whole
(non-streamed) completion -- into one reply.

A chunk is one `data:` payload of an OpenAI-compatible stream, parsed. The fold checks each chunk
against what the format allows before taking anything from it, so a chunk of the wrong shape
ends the stream with `UPSTREAM_ERROR` instead of an exception from deep inside the relay.

What the format allows is deliberately loose where real servers differ (captured in
tests/fixtures/sse): `choices` may be empty or absent (usage chunks, Azure's prompt-filter chunk),
a choice may lack `delta` (Azure's content-filter annotation), `usage` may be `null` on every
chunk (DeepSeek) or ride on the finish chunk (Groq). Only the fields a reply is made of are
checked (choices, index, delta, content, refusal, finish_reason, usage); `id`, `model` and
`created` only label the envelope and are taken when well-typed; other fields are never read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import APIError

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


class Chunk(NamedTuple):
    """One upstream event: its `data` exactly as sent, and that data parsed as a JSON object."""

    data: str
    obj: dict[str, Any]


def malformed(what: str) -> APIError:
    return APIError(502, "UPSTREAM_ERROR", f"The upstream sent a malformed chunk: {what}.")


def truncated() -> APIError:
    return APIError(
        502, "UPSTREAM_ERROR", "The upstream stream ended before the reply was complete."
    )


class Completion:
    """What a stream has said so far: text of choice 0, finish reason, usage, id, model.

    `fold()` takes a batch of chunks in order and stops at the first malformed one (raising);
    everything before it is folded, `folded` says how many chunks that was, and `take_text()`
    hands out the text folded since it was last called -- so the text that came before an error
    still reaches the client.
    """

    __slots__ = ("_sent", "created", "finish_reason", "folded", "id", "model", "parts", "usage")

    def __init__(self, model: str) -> None:
        self.id = ""
        self.model = model
        self.created = 0
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.folded = 0
        self._sent = 0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def fold(self, batch: Sequence[Chunk]) -> None:
        self.folded = 0
        for chunk in batch:
            self._fold(chunk.obj)
            self.folded += 1

    def fold_whole(self, obj: Any) -> None:
        """Fold a whole chat completion (`choices[].message` instead of `delta`) by the same
        rules as a stream's chunks; one without a choice is malformed too."""
        if type(obj) is not dict:
            raise malformed("the completion is not an object")
        choices = obj.get("choices")
        if not choices or type(choices) is not list:
            raise malformed("the completion has no choices")
        # Its labels each stand alone (a stream takes them from the chunk that first has an id).
        for name in ("id", "model"):
            value = obj.get(name)
            if value and type(value) is str:
                setattr(self, name, value)
        if type(obj.get("created")) is int:
            self.created = obj["created"]
        self._fold(obj, "message")
        self.folded = 1

    def fold_usage(self, obj: Any) -> None:
        """An answer that is no completion (embeddings): only its usage, if any."""
        if type(obj) is not dict:
            raise malformed("the answer is not an object")
        usage = obj.get("usage")
        if usage is not None:
            self.usage = _usage(usage)

    def take_text(self) -> str:
        """The text folded since the last call ("" if none)."""
        parts = self.parts
        if self._sent == len(parts):
            return ""
        text = parts[-1] if self._sent == len(parts) - 1 else "".join(parts[self._sent :])
        self._sent = len(parts)
        return text

    def finish(self, saw_done: bool) -> None:
        """The upstream closed the stream: complete if it said `[DONE]` or gave a finish reason."""
        if not (saw_done or self.finish_reason):
            raise truncated()

    def _fold(self, obj: dict[str, Any], part: str = "delta") -> None:
        # Hot path: one call per upstream chunk. `type(x) is T` rather than isinstance(): JSON
        # only ever produces these exact types, and it is the cheaper test. `part`: "message"
        # for a whole completion, whose choices say it all at once.
        if not self.id and part == "delta":
            self._identify(obj)
        usage = obj.get("usage")
        if usage is not None:
            counts = _usage(usage)
            if counts:
                self.usage = counts
        choices = obj.get("choices")
        if not choices:  # absent, null or []: usage and filter chunks
            return
        if type(choices) is not list:
            raise malformed("'choices' is not a list")
        for choice in choices:
            if type(choice) is not dict:
                raise malformed("a choice is not an object")
            index = choice.get("index", 0)
            if type(index) is not int:
                raise malformed("a choice's 'index' is not an integer")
            finish = choice.get("finish_reason")
            if finish is not None and type(finish) is not str:
                raise malformed("'finish_reason' is not a string")
            delta = choice.get(part)
            if delta is not None and type(delta) is not dict:
                raise malformed(f"'{part}' is not an object")
            if index != 0:  # n>1 streams interleave choices; the reply is choice 0
                continue
            if delta:
                # A refusal is what the model said instead of an answer: it is the reply's text.
                text = delta.get("content") or delta.get("refusal")
                if text:
                    if type(text) is not str:
                        raise malformed("'content' is not a string")
                    self.parts.append(text)
            if finish:
                self.finish_reason = finish

    def _identify(self, obj: dict[str, Any]) -> None:
        # Only labels for the envelope: taken when well-typed, never a reason to end a reply.
        chunk_id = obj.get("id")
        if not chunk_id or type(chunk_id) is not str:
            return
        self.id = chunk_id
        model = obj.get("model")
        if model and type(model) is str:
            self.model = model
        created = obj.get("created")
        if type(created) is int:
            self.created = created


def _usage(usage: Any) -> dict[str, int] | None:
    """The three standard counters, or None for an empty usage object; anything else: malformed."""
    if type(usage) is not dict:
        raise malformed("'usage' is not an object")
    if not usage:
        return None
    counts: dict[str, int] = {}
    for field in USAGE_FIELDS:
        value = usage.get(field) or 0
        if type(value) is not int:
            raise malformed(f"'usage.{field}' is not an integer")
        counts[field] = value
    return counts
