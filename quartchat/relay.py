"""The streaming relay: upstream chat-completion chunks in, our `chunk`/`done`/`error` events out.

Everything here runs once per upstream read, so it is kept flat: no per-event objects beyond
what the parser returns, and text deltas that arrive in the same read go out as one event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import httpx
import orjson

from .accesslog import AccessRecord
from .errors import APIError, redact
from .schemas import ChatRequest
from .sse import PING, SSEEvent, SSEParser, encode
from .streams import LiveStreams, StreamWatch, shutting_down
from .transport import STREAM_EXTENSION, AiohttpStream
from .upstream import UpstreamClient, message_of

PRIMED = b""
"""First value of `relay()`: the upstream accepted the request and its body has begun."""


class Completion:
    """What the stream has said so far, folded from upstream chunks."""

    __slots__ = ("created", "done", "finish_reason", "id", "model", "parts", "usage")

    def __init__(self, model: str) -> None:
        self.id = ""
        self.model = model
        self.created = 0
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.done = False

    def apply(self, events: list[SSEEvent]) -> bytes:
        """Fold events in; return the `chunk` event for the text they carried (or b"")."""
        texts = []
        for kind, data in events:
            if kind == "error":
                raise _in_band_error(data)
            if data == "[DONE]":
                self.done = True
                break
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise APIError(502, "UPSTREAM_ERROR", "The upstream sent malformed data.") from None
            if type(obj) is not dict:
                raise APIError(502, "UPSTREAM_ERROR", "The upstream sent malformed data.")
            if obj.get("error"):
                raise _in_band_error(data)
            if not self.id and obj.get("id"):
                self.id = str(obj["id"])
                self.model = str(obj.get("model") or self.model)
                self.created = int(obj.get("created") or 0)
            usage = obj.get("usage")
            if usage:
                self.usage = usage
            for choice in obj.get("choices") or ():
                # n>1 streams interleave choices; the chat shows choice 0.
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if delta:
                    # A refusal is what the model said instead of an answer: show it.
                    text = delta.get("content") or delta.get("refusal")
                    if text:
                        texts.append(text)
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        if not texts:
            return b""
        text = texts[0] if len(texts) == 1 else "".join(texts)
        self.parts.append(text)
        return encode("chunk", {"delta": text})

    def envelope(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "id": self.id or f"chatcmpl-{uuid.uuid4().hex}",
            "model": self.model,
            "created": self.created or int(time.time()),
            "message": {"role": "assistant", "content": "".join(self.parts)},
            "finish_reason": self.finish_reason,
            "usage": None
            if not usage
            else {
                k: int(usage.get(k) or 0)
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        }


def _in_band_error(data: str) -> APIError:
    return APIError(
        502,
        "UPSTREAM_ERROR",
        "The upstream reported an error: " + redact(message_of(data.encode())),
    )


class _Reader(NamedTuple):
    read: Callable[[], Awaitable[bytes]]
    """Whatever bytes have arrived (b"" at the end); its wait can be abandoned losing nothing."""
    cancel: Callable[[], None]
    """Drop a read still pending (cleanup)."""
    stop_transport_timeout: Callable[[], None]
    """From now on the caller times the gaps between reads (the StreamWatch does, once the
    stream has begun, with one timer event per ping period rather than the transport's timer
    re-armed on every packet)."""


def _noop() -> None:
    pass


def _chunk_reader(response: httpx.Response) -> _Reader:
    stream = response.extensions.get(STREAM_EXTENSION)
    if isinstance(stream, AiohttpStream):
        return _Reader(stream.read_chunk, _noop, stream.stop_read_timeout)
    # Any other transport (respx in tests): park the pending read in a task that outlives a ping.
    chunks = response.aiter_raw()
    pending: asyncio.Future[bytes] | None = None

    async def read() -> bytes:
        nonlocal pending
        if pending is None:
            pending = asyncio.ensure_future(anext(chunks, b""))
        chunk = await asyncio.shield(pending)
        pending = None
        return chunk

    def cancel() -> None:
        if pending is not None:
            pending.cancel()

    return _Reader(read, cancel, _noop)


async def relay(
    upstream: UpstreamClient, chat: ChatRequest, record: AccessRecord, streams: LiveStreams
) -> AsyncIterator[bytes]:
    """Relay one streamed completion.

    Yields `PRIMED` first, once the upstream has accepted the request and sent its first bytes;
    any failure before that is raised as `APIError`, so the caller can answer with a real HTTP
    error status. After it, failures become an `error` event and the stream ends. The upstream
    response is closed in `finally`, so a client that goes away stops the upstream at once.
    """
    response, model = await upstream.open_stream(chat)
    record.upstream_status = response.status_code
    read, cancel_read, stop_transport_timeout = _chunk_reader(response)
    watch: StreamWatch | None = None
    try:
        try:
            chunk = await read()
        except httpx.HTTPError as exc:
            raise upstream.error_for_exception(exc) from None
        yield PRIMED
        watch = streams.watch()
        stop_transport_timeout()
        now = asyncio.get_running_loop().time  # the clock the watch's timer runs on
        record.outcome = "disconnected"
        completion = Completion(model)
        parser = SSEParser()
        try:
            while True:
                if chunk:
                    out = completion.apply(parser.feed(chunk))
                else:
                    out = completion.apply(parser.close())
                    if not (completion.done or completion.finish_reason):
                        raise APIError(
                            502,
                            "UPSTREAM_ERROR",
                            "The upstream stream ended before the reply was complete.",
                        )
                    completion.done = True
                if out:
                    record.mark_first_token()
                    yield out
                    watch.last_sent = watch.waiting_since = now()
                else:
                    watch.waiting_since = now()
                if completion.done:
                    break
                while True:
                    if watch.stopping:
                        raise shutting_down()
                    # The watch cancels this read for a ping, an idle timeout or shutdown.
                    watch.reading = True
                    try:
                        chunk = await read()
                        break
                    except asyncio.CancelledError:
                        if not watch.woken():
                            raise
                    finally:
                        watch.reading = False
                    if watch.timed_out:
                        raise upstream.error_for_exception(
                            httpx.ReadTimeout("upstream idle", request=response.request)
                        )
                    if not watch.stopping:
                        yield PING
                        watch.last_sent = now()
            envelope = completion.envelope()
            record.usage = envelope["usage"]
            record.outcome = "done"
            yield encode("done", envelope)
        except httpx.HTTPError as exc:
            record.outcome = "error"
            yield _error_event(upstream.error_for_exception(exc), record.request_id)
        except APIError as exc:
            record.outcome = "shutdown" if watch.stopping else "error"
            yield _error_event(exc, record.request_id)
    finally:
        cancel_read()
        await response.aclose()
        if watch is not None:
            streams.forget(watch)
            record.status = 200
            record.emit()


def _error_event(error: APIError, request_id: str) -> bytes:
    return encode("error", error.payload(request_id))
