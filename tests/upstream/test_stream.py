"""UpstreamStream on its own: network reads in, batches of chunks (or APIError) out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from quartchat.errors import APIError, Redactor
from quartchat.streaming.completion import Chunk
from quartchat.upstream.client import UpstreamStream


class Reads:
    """A scripted body: each read returns the next piece (b"" at the end) or raises it."""

    def __init__(self, pieces: Sequence[bytes | Exception]) -> None:
        self.pieces = list(pieces)
        self.closed = False

    async def read(self) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if isinstance(piece, Exception):
            raise piece
        return piece

    async def close(self) -> None:
        self.closed = True


def make(*pieces: bytes | Exception, key: str | None = None) -> tuple[UpstreamStream, Reads]:
    reads = Reads(pieces)
    return UpstreamStream(reads.read, reads.close, model="m", redact=Redactor(key)), reads


async def batches(stream: UpstreamStream) -> list[list[str]]:
    return [[c.data for c in batch] async for batch in stream]


def data(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"' + text.encode() + b'"}}]}\n\n'


async def test_one_read_is_one_batch_of_parsed_chunks() -> None:
    stream, _ = make(data("a") + data("b"), data("c"))
    result = [batch async for batch in stream]
    assert [[c.obj["choices"][0]["delta"]["content"] for c in b] for b in result] == [
        ["a", "b"],
        ["c"],
    ]
    assert all(isinstance(c, Chunk) for b in result for c in b)
    assert stream.saw_done is False


async def test_done_ends_the_stream_and_nothing_after_it_is_read() -> None:
    stream, reads = make(data("a") + b"data: [DONE]\n\n" + data("late"), data("later"))
    assert await batches(stream) == [[data("a")[6:-2].decode()]]
    assert stream.saw_done is True
    assert reads.pieces == [data("later")]


async def test_a_read_of_comments_or_part_of_a_line_is_an_empty_batch() -> None:
    stream, _ = make(b": keep-alive\n\n", data("a")[:10], data("a")[10:])
    assert [len(b) for b in [batch async for batch in stream]] == [0, 0, 1]


@pytest.mark.parametrize(
    "bad",
    [
        b'data: {"error": {"message": "overloaded"}}\n\n',
        b'error: {"message": "overloaded"}\n\n',
        b"data: {nope\n\n",
        b'data: "a string"\n\n',
    ],
)
async def test_an_error_after_chunks_in_one_read_raises_only_after_they_are_handed_out(
    bad: bytes,
) -> None:
    stream, _ = make(data("a") + bad + data("b"), data("c"))
    first = await stream.__anext__()
    assert len(first) == 1
    with pytest.raises(APIError) as raised:
        await stream.__anext__()
    assert raised.value.code == "UPSTREAM_ERROR"
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def error_after(stream: UpstreamStream) -> tuple[int, APIError]:
    """How many chunks came out before the stream raised, and what it raised."""
    count = 0
    try:
        async for batch in stream:
            count += len(batch)
    except APIError as error:
        return count, error
    raise AssertionError("the stream ended without an error")


async def test_an_error_at_the_very_end_of_the_body_is_raised_too() -> None:
    stream, _ = make(data("a") + b'data: {"error": "gone"}')  # no blank line: ends at EOF
    count, error = await error_after(stream)
    assert count == 1
    assert "gone" in error.message


async def test_an_error_in_the_first_bytes_still_lets_the_stream_begin() -> None:
    # However the reads fall, an error found in the data is raised after the stream began.
    stream, _ = make(b'data: {"error": "at once"}\n\n')
    await stream.prime()
    count, error = await error_after(stream)
    assert (count, error.code) == (0, "UPSTREAM_ERROR")


async def test_an_in_band_error_message_loses_the_configured_key() -> None:
    key = "0123456789abcdef0123456789abcdef"
    stream, _ = make(b'data: {"error": {"message": "bad key ' + key.encode() + b'"}}\n\n', key=key)
    _, error = await error_after(stream)
    assert error.message == "The upstream reported an error: bad key [redacted]"


@pytest.mark.parametrize(
    ("failure", "code"),
    [(httpx.ReadError("reset"), "UPSTREAM_ERROR"), (httpx.ReadTimeout("x"), "UPSTREAM_TIMEOUT")],
)
async def test_a_transport_failure_mid_stream_is_mapped(failure: Exception, code: str) -> None:
    stream, _ = make(data("a"), failure, data("b"))
    await stream.__anext__()
    with pytest.raises(APIError) as raised:
        await stream.__anext__()
    assert raised.value.code == code
    with pytest.raises(StopAsyncIteration):  # and nothing more is read
        await stream.__anext__()


async def test_priming_waits_for_the_first_bytes_and_keeps_their_chunks() -> None:
    stream, reads = make(data("a"), data("b"))
    await stream.prime()
    assert reads.pieces == [data("b")]
    assert [len(b) async for b in stream] == [1, 1]


async def test_a_body_that_ends_before_saying_anything_fails_priming() -> None:
    stream, _ = make()
    with pytest.raises(APIError) as raised:
        await stream.prime()
    assert raised.value.code == "UPSTREAM_ERROR"


async def test_an_abandoned_wait_loses_nothing() -> None:
    arrived = asyncio.Event()

    async def slow_read() -> bytes:
        await arrived.wait()
        return data("a")

    reads = Reads([])
    stream = UpstreamStream(slow_read, reads.close, model="m")
    waiting = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    arrived.set()
    assert len(await stream.__anext__()) == 1


async def test_aclose_closes_the_response() -> None:
    stream, reads = make(data("a"))
    await stream.aclose()
    assert reads.closed
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
