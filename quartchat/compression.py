"""gzip for text responses: the page, its scripts and styles, large JSON. Never for streams.

Compression happens after the view, on whole bodies only: a streamed body (the SSE replies) is
an iterable, never touched, since a compressor would hold back events until its buffer filled.
Static files are compressed once per file version and kept in memory (they are a few hundred
KB in all), so a page load costs no compression at all after the first. Behind a proxy that
compresses itself, this does nothing the proxy will not undo: a response that is already encoded
is left alone.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path

from quart import Response, request
from quart.wrappers.response import DataBody, FileBody

COMPRESSIBLE = frozenset(
    {
        "text/html",
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/json",
        "image/svg+xml",
        "text/plain",
    }
)
MIN_BYTES = 1024  # below this, the gzip header and the CPU are not worth it
LEVEL = 6


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (and does not refuse it with q=0)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=")
            try:
                return not params or float(quality) > 0
            except ValueError:
                return True
    return False


class Compressor:
    """An after_request step: gzip a finished text body when the client accepts it."""

    def __init__(self) -> None:
        self._files: dict[tuple[Path, int, int], bytes] = {}

    async def compress(self, response: Response) -> Response:
        body = response.response
        if isinstance(body, DataBody) and len(body.data) < MIN_BYTES:
            # Too small to gain: the same bytes whatever the client takes (and most API answers
            # are this small, so they skip the header parsing below).
            return response
        if response.status_code != 200 or "Content-Encoding" in response.headers:
            return response
        if response.mimetype not in COMPRESSIBLE:
            return response
        response.vary.add("Accept-Encoding")
        if not accepts_gzip(request.headers.get("Accept-Encoding", "")):
            return response
        if isinstance(body, FileBody):
            if body.begin != 0 or body.end != body.size:  # a range request: sent as it is
                return response
            compressed = await self._file(body.file_path)
        elif isinstance(body, DataBody):
            compressed = gzip.compress(body.data, LEVEL, mtime=0)
        else:  # an iterable: a stream, which must reach the client event by event
            return response
        response.set_data(compressed)
        response.headers["Content-Encoding"] = "gzip"
        # The compressed bytes are a different representation: a strong ETag must not claim
        # they are the same bytes as the identity ones (a weak one still answers 304s).
        if response.headers.get("ETag", "").startswith('"'):
            response.headers["ETag"] = "W/" + response.headers["ETag"]
        return response

    async def _file(self, path: Path) -> bytes:
        stat = os.stat(path)  # one system call; the file itself is read off the loop
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._files:
            # Off the event loop: the first request for a 1.7 MB bundle must not stall streams.
            compressed = await asyncio.to_thread(_compress_file, path)
            self._files = {k: v for k, v in self._files.items() if k[0] != path}
            self._files[key] = compressed
        return self._files[key]


def _compress_file(path: Path) -> bytes:
    return gzip.compress(path.read_bytes(), 9, mtime=0)
