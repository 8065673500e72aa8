"""Requests into values: JSON bodies into models, one way, one error shape (400 INVALID_REQUEST
with details), and the path converters the blueprints share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from quart import request
from quart.blueprints import BlueprintSetupState
from quart_schema import document_request
from werkzeug.routing import BaseConverter, IntegerConverter, Map, UUIDConverter

from ..errors import APIError

M = TypeVar("M", bound=BaseModel)

# Row ids are 32-bit integers on PostgreSQL.
MAX_ROW_ID = 2**31 - 1


async def parse(model: type[M], what: str = "request") -> M:
    """The JSON body as `model`, validated straight from the bytes (no input echoed back)."""
    body = await request.get_data(cache=False)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(exc, what) from None


def invalid(exc: ValidationError, what: str) -> APIError:
    """400 `INVALID_REQUEST`, one {loc, msg, type} detail per failing field (no input echoed)."""
    details = [
        {
            "loc": ".".join(str(p) for p in e["loc"]) or "body",
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return APIError(
        400, "INVALID_REQUEST", f"The request body is not a valid {what}.", details=details
    )


def _integral(value: object) -> object:
    # JSON Schema counts 512.0 as an integer; strict mode alone would refuse it.
    return int(value) if type(value) is float and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)
"""Last in an integer field's `Annotated[int, Field(…), INTEGRAL]`, after its constraints (which
then reach the JSON schema): the field takes `512.0` as JSON Schema does."""


class Empty(BaseModel):
    """No fields: send `{}`."""

    model_config = ConfigDict(extra="forbid")


def instant(text: str) -> datetime:
    """An RFC 3339 time (with its offset), in UTC; ValueError for anything else. Times that
    fall off the calendar in UTC (year 1 east of Greenwich) are its first or last instant."""
    at = datetime.fromisoformat(text.upper())
    if at.tzinfo is None:
        raise ValueError("a time without an offset")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        return (datetime.min if at.year == 1 else datetime.max).replace(tzinfo=UTC)


class RowId(IntegerConverter):
    """A row's id in a path: a larger number than a row id can be matches no route (a 404)."""

    def __init__(self, map: Map) -> None:
        super().__init__(map, max=MAX_ROW_ID)


class RowUuid(UUIDConverter):
    """A row's UUID in a path, as the text the database keeps (lower case). Anything else matches
    no route: `/api/conversations/changes` stays the change feed's alone, so other methods there
    answer 405 with its own methods, not 404 for a conversation called `changes`."""

    def to_python(self, value: str) -> str:  # type: ignore[override]
        return str(super().to_python(value))


class Subject(BaseConverter):
    """A policy's subject (usage/policies.py): anything else matches no route (a 404)."""

    regex = r"role:(?:admin|user)|user:[1-9][0-9]{0,17}"
    schema_pattern = "^(?:role:(?:admin|user)|user:[1-9][0-9]{0,17})$"  # the OpenAPI schema's


def path_converters(state: BlueprintSetupState) -> None:
    """Record before a blueprint's routes: the converters they name."""
    state.app.url_map.converters.update(row_id=RowId, row_uuid=RowUuid, subject=Subject)


View = TypeVar("View", bound=Callable[..., Awaitable[Any]])


def takes(model: type[BaseModel], what: str = "request") -> Callable[[View], View]:
    """Name a route's request body once: quart-schema documents `model` as the body, and the view
    receives it parsed as its `body` argument (by `parse`: validated from the bytes, strictly,
    400 INVALID_REQUEST with details)."""

    def decorate(view: View) -> View:
        @wraps(view)
        async def parsed(*args: Any, **kwargs: Any) -> Any:
            return await view(*args, body=await parse(model, what), **kwargs)

        return cast(View, document_request(model)(parsed))

    return decorate
