"""The streaming relay: a flat loop from an `UpstreamStream` to an encoder's bytes.

`start()` opens the upstream stream and returns the response body once the upstream has sent its
first bytes, so every failure before that is still an HTTP error status. After it, every failure
ends the stream with the encoder's `error` event -- never a cut connection -- and the upstream
response is closed in `finally`, so a client that goes away stops the upstream at once. The
caller's `Slot` (usage/limits.py) is given back there too, or by `start()` if it fails.

Everything in the loop runs once per upstream read, so it is kept flat.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from ..errors import APIError
from ..upstream.client import UpstreamStream
from ..usage.limits import NO_SLOT, Slot
from .completion import Chunk, Completion
from .watch import Holder, LiveStreams, StreamWatch

log = logging.getLogger("quartchat")


class Encoder(Protocol):
    """A wire format for the client (streaming/encoders.py)."""

    content_type: str
    ping: bytes

    def chunk(self, batch: Sequence[Chunk], completion: Completion) -> bytes:
        """What the chunks just folded into `completion` become (b"" for nothing)."""

    def done(self, completion: Completion) -> bytes: ...

    def error(self, error: APIError, request_id: str) -> bytes: ...


class Observer(Protocol):
    """Who wants to know how a stream went: the access log, the reply kept on the server, later
    metrics. `completion` is the live fold: read it, never change it."""

    def opened(self, upstream_status: int, completion: Completion) -> None: ...

    def first_output(self) -> None: ...

    async def ended(self, outcome: str, completion: Completion, error: APIError | None) -> None:
        """Once, when the stream is over: `done`, `error`, `shutdown` or `disconnected`."""


def internal_error() -> APIError:
    return APIError(500, "INTERNAL_ERROR", "An unexpected error ended this reply.")


async def start(
    open_stream: Callable[[], Awaitable[UpstreamStream]],
    encoder: Encoder,
    streams: LiveStreams,
    observer: Observer,
    request_id: str,
    *,
    holder: Holder | None = None,
    slot: Slot = NO_SLOT,
) -> AsyncIterator[bytes]:
    """Open the upstream stream; return the response body once its first bytes have arrived.

    Raises APIError if the upstream fails before then. `slot` is released when the body ends
    (or here, if it never begins); `holder` is who the stream runs for (`LiveStreams.end_held`).
    """
    body = _relay(open_stream, encoder, streams, observer, request_id, holder, slot)
    try:
        await anext(body)
    except BaseException:
        slot.release()
        raise
    return body


async def _relay(
    open_stream: Callable[[], Awaitable[UpstreamStream]],
    encoder: Encoder,
    streams: LiveStreams,
    observer: Observer,
    request_id: str,
    holder: Holder | None,
    slot: Slot,
) -> AsyncIterator[bytes]:
    stream = await open_stream()  # opened here, so that closing this generator closes it
    completion = Completion(stream.model)
    observer.opened(stream.status, completion)
    outcome = "disconnected"
    failure: APIError | None = None
    watch: StreamWatch | None = None
    try:
        yield b""  # primed: from here on, the response is a 200 stream
        # The watch belongs to the task that sends the body, which starts here.
        watch = streams.watch(holder)
        silent = True
        try:
            while True:
                try:
                    batch = await watch.next(stream)
                except StopAsyncIteration:
                    break
                if batch is None:
                    yield encoder.ping
                    watch.sent()
                    continue
                malformed = None
                try:
                    completion.fold(batch)
                except APIError as error:
                    malformed = error
                out = encoder.chunk(batch, completion)  # with a malformed chunk: what came before
                if out:
                    if silent:
                        silent = False
                        observer.first_output()
                    yield out
                    watch.sent()
                if malformed is not None:
                    raise malformed
            completion.finish(stream.saw_done)
            outcome = "done"
            yield encoder.done(completion)
        except APIError as error:
            outcome, failure = ("shutdown" if watch.stopping else "error"), error
            yield encoder.error(error, request_id)
        except Exception as exc:  # a bug: still a terminal event, not a cut connection
            # The type only: exception text can carry request data or upstream secrets.
            log.error("unhandled %s in stream %s", type(exc).__name__, request_id)
            outcome, failure = "error", internal_error()
            yield encoder.error(failure, request_id)
    finally:
        try:
            if watch is not None:
                streams.forget(watch)
            await stream.aclose()
            await observer.ended(outcome, completion, failure)
        finally:  # whatever failed or was cancelled above, the user's slot is theirs again
            slot.release()
