"""Request bodies into models: one way, one error shape (400 INVALID_REQUEST with details)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from ..errors import APIError

M = TypeVar("M", bound=BaseModel)


async def parse(model: type[M], what: str = "request") -> M:
    """The JSON body as `model`, validated straight from the bytes (no input echoed back)."""
    body = await request.get_data(cache=False)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        details = [
            {
                "loc": ".".join(str(p) for p in e["loc"]) or "body",
                "msg": e["msg"],
                "type": e["type"],
            }
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise APIError(
            400, "INVALID_REQUEST", f"The request body is not a valid {what}.", details=details
        ) from None
