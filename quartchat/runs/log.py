"""The event log of a run, and the ids of its events.

Every event of a turn stream carries an SSE `id:` that says where in the reply it ends: a
`chunk`'s id is the length of the reply's text (in code points) up to and including it, the
terminal `done` or `error` event's is that length and `.end`. So an id means the same thing
whatever serves it -- the log in memory, a Redis Stream, or the text saved in the database -- and a
reader resuming after any id gets exactly the rest. Clients echo ids; they never compute them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple, Protocol

import orjson

from ..errors import APIError
from ..streaming.completion import Chunk, Completion
from ..streaming.encoders import ChatEvents
from ..streaming.sse import PING, encode

END = ".end"


class Resume(NamedTuple):
    """Where a reader resumes: after `offset` characters, or nothing more (`ended`)."""

    offset: int
    ended: bool


def resume_point(value: str | None) -> Resume:
    """The `Last-Event-ID` (or `?after=`) a reader sent (None: from the start); APIError 400
    for one we never gave."""
    if value is None:
        return Resume(0, False)
    number, ended = (value[: -len(END)], True) if value.endswith(END) else (value, False)
    if not number.isdigit() or len(number) > 12:
        raise APIError(
            400, "INVALID_REQUEST", "`Last-Event-ID` (or `after`) is not an id this API gave."
        )
    return Resume(int(number), ended)


def chunk_event(offset: int, text: str) -> bytes:
    """A `chunk` event of `text`, the reply up to `offset` characters ending with it."""
    return b"id: %d\n" % offset + encode("chunk", {"delta": text})


def end_id(offset: int) -> bytes:
    return b"id: %d.end\n" % offset


def rest_of(event: bytes, offset: int, length: int) -> bytes:
    """The last `length` characters of a chunk event, as a chunk event ending at `offset` (for a
    reader resuming inside a chunk: an id we never give, but `?after=` takes any number)."""
    data = event[event.index(b"data: ") + 6 :].strip()
    delta: str = orjson.loads(data)["delta"]
    return chunk_event(offset, delta[len(delta) - length :])


def interrupted() -> APIError:
    return APIError(
        503,
        "REPLY_INTERRUPTED",
        "The server running this reply stopped before it was complete; what it had said is kept.",
    )


def interrupted_end(offset: int) -> bytes:
    """The end event of a reply whose process is gone, after `offset` characters."""
    return end_id(offset) + ChatEvents().error(interrupted(), "-")


class LogUnavailable(Exception):
    """A shared log cannot give this reader the rest of a run (Redis is away, the run is not
    mirrored there, or entries are missing): the reader goes on from the database, after
    `offset` characters."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class StampedEvents:
    """Our events (`ChatEvents`) with an id on each: one per run, since it counts the reply's
    characters. `ended` says whether the terminal event has been made."""

    __slots__ = ("ended", "offset")

    content_type = ChatEvents.content_type
    ping = PING
    _plain = ChatEvents()

    def __init__(self) -> None:
        self.offset = 0
        self.ended = False

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        text = completion.take_text()
        if not text:
            return b""
        self.offset += len(text)
        return chunk_event(self.offset, text)

    def done(self, completion: Completion) -> bytes:
        self.ended = True
        return end_id(self.offset) + self._plain.done(completion)

    def error(self, error: APIError, request_id: str) -> bytes:
        self.ended = True
        return end_id(self.offset) + self._plain.error(error, request_id)


class RunLog(Protocol):
    """Where a run's events go and where readers find them, by run (a reply's id).

    The run calls `open` once, then `append` once per event (the last one with `last=True`) and
    `ping` when it has been quiet for a ping period; neither blocks. Readers `follow`.

    `shared`: whether the log also holds other processes' runs (Redis). Following one of those
    may raise `LogUnavailable`; a log that is not shared only follows the runs it `holds`.
    """

    shared: bool

    def open(self, run_id: str) -> None: ...

    def append(self, run_id: str, offset: int, event: bytes, last: bool) -> None: ...

    def ping(self, run_id: str) -> None: ...

    def holds(self, run_id: str) -> bool:
        """Whether the log has this run of this process (running, or ended within the retention
        time)."""

    def follow(self, run_id: str, after: int) -> AsyncIterator[bytes]:
        """The events after `after` characters, then the live ones as they come (pings too),
        ending after the last; nothing if the log does not hold the run."""
