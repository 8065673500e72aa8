"""What several blueprints answer the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from pydantic import BaseModel
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


def answer(model: type[BaseModel], payload: Mapping[str, Any], status: int = 200) -> Response:
    """A JSON answer built from the model its route documents: `payload` is validated against
    `model` and sent as the model serialises it, so what a route sends cannot drift from what
    its description says (a view that does is a 500 in the tests, not a surprise in a client).
    Fields the payload leaves out stay out."""
    built = model.model_validate(payload)
    data = built.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return Response(orjson.dumps(data), status=status, content_type="application/json")
