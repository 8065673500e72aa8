"""Building blocks for respx-mocked upstream responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import httpx


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in the given pieces; remembers whether it was closed."""

    def __init__(self, pieces: Sequence[bytes | BaseException], delay: float = 0.0) -> None:
        self.pieces = pieces
        self.delay = delay
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if i and self.delay:
                await asyncio.sleep(self.delay)
            if isinstance(piece, BaseException):
                raise piece
            yield piece

    async def aclose(self) -> None:
        self.closed = True


def sse_response(
    *pieces: bytes | BaseException, delay: float = 0.0, status: int = 200
) -> httpx.Response:
    return httpx.Response(
        status, headers={"Content-Type": "text/event-stream"}, stream=ChunkStream(pieces, delay)
    )
