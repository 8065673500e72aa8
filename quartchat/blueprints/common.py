"""What several blueprints answer the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Response

from ..streaming.encoders import ChatEvents


def event_stream(body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> Response:
    """A server-sent event stream: never cached, never buffered by a proxy, and never timed out
    as a whole (a reply may take minutes; the stream's watch bounds each idle gap instead)."""
    response = Response(body, content_type=ChatEvents.content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    if headers:
        response.headers.update(headers)
    response.timeout = None
    return response
