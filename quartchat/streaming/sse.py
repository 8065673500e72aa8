"""Server-sent events: an incremental parser for upstream streams and the encoder for ours.

The parser follows the WHATWG event-stream rules with two deliberate extensions, both for the
upstreams we relay:

* End of input dispatches the pending event (`close()`): several servers end with `data: [DONE]`
  and no blank line, which a strict parser would drop.
* A line with the non-standard field `error` (llama.cpp builds up to 2025 report failures that
  way at HTTP 200) is surfaced as an event named `error` instead of being ignored, so a failure
  can never look like an empty success.
"""

from __future__ import annotations

import codecs
from typing import NamedTuple

import orjson

BOM = "\ufeff"


class SSEEvent(NamedTuple):
    event: str
    data: str


class SSEParser:
    """Feed bytes as they arrive; get back the events they complete.

    Lines end at LF, CRLF or a lone CR and nowhere else (not at U+2028 or U+0085, which
    `str.splitlines()` and `httpx.Response.aiter_lines()` would wrongly split on). A CR at the
    very end of a read is held back until the next byte shows whether an LF follows it.
    """

    __slots__ = ("_data", "_decoder", "_event", "_pending", "_started")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._pending + self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            if text[0] == BOM:
                text = text[1:]
        if "\r" in text:
            if text[-1] == "\r":
                self._pending = "\r"
                text = text[:-1]
            else:
                self._pending = ""
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            lines = text.split("\n")
            self._pending = lines.pop() + self._pending
        else:
            lines = text.split("\n")
            self._pending = lines.pop()
        return self._lines(lines) if lines else []

    def close(self) -> list[SSEEvent]:
        """End of input: take the unterminated last line and dispatch what is pending."""
        tail = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        lines = tail.replace("\r\n", "\n").replace("\r", "\n").split("\n") if tail else []
        lines.append("")
        return self._lines(lines)

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(SSEEvent(self._event, "\n".join(data)))
                    data.clear()
                self._event = ""
                continue
            if line[0] == ":":
                continue
            field, sep, value = line.partition(":")
            if sep and value[:1] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                self._event = value
            elif field == "error":
                self._event = "error"
                data.append(value)
            # `id` and `retry` steer browser reconnection; a relay has no use for them.
        return events


PING = b": ping\n\n"


def encode(event: str, payload: object) -> bytes:
    """One outgoing event; orjson never emits a raw newline, so `data` stays a single line."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
