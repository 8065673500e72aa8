"""The API's description: OpenAPI 3.1 built by quart-schema from the routes' documented models.

`/openapi.json` is quart-schema's; the page at `/docs` is ours (blueprints/ui.py), because
quart-schema's pages load Swagger UI from a CDN and start it with an inline script, which the
page CSP forbids. Ours loads the vendored Swagger UI and starts it from static/docs.js.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Quart
from quart_schema import DataSource, Info, OpenAPIProvider, QuartSchema, document_response

from . import __version__
from .schemas import ChatResponse, ErrorResponse

F = TypeVar("F", bound=Callable[..., Any])


def document_errors(*statuses: int) -> Callable[[F], F]:
    """Document the error shape for each of `statuses` (every error has that one shape)."""

    def decorate(view: F) -> F:
        for status in statuses:
            view = document_response(ErrorResponse, status)(view)
        return view

    return decorate


class EventStream(BaseModel):
    """A `text/event-stream` of `chunk` events, then `done` (the reply's envelope) or `error`.

    `event: chunk` / `data: {"delta": "…"}` carries text as it arrives; `event: done` carries the
    same envelope as `POST /api/chat`; `event: error` carries `{"error": {"code", "message",
    "request_id"}}` when the stream fails after it began. A `: ping` comment line is sent after
    `SSE_PING_SECONDS` of silence.
    """


def _event(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event: its name, and its `data` line (JSON text of the given schema)."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
        },
    }


# OpenAPI 3.1 has no `itemSchema` yet (3.2 does); by convention, and for schemathesis, the schema
# of a text/event-stream response describes each event.
EVENT_SCHEMA = {
    "oneOf": [
        _event(
            "chunk",
            {"type": "object", "required": ["delta"], "properties": {"delta": {"type": "string"}}},
        ),
        _event("done", {"$ref": "#/components/schemas/ChatResponse"}),
        _event("error", {"$ref": "#/components/schemas/ErrorResponse"}),
    ]
}


def _components(*models: type[BaseModel]) -> dict[str, Any]:
    """Component schemas for `models` and the models they contain, for `$ref`s to name."""
    components: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


class Provider(OpenAPIProvider):
    """quart-schema's provider, taught that a stream's body is not JSON and that a documented
    request body is required."""

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is EventStream:
            description = (EventStream.__doc__ or "").strip()
            content = {"text/event-stream": {"schema": EVENT_SCHEMA}}
            return {"description": description, "content": content}, _components(
                ChatResponse, ErrorResponse
            )
        return super().build_response_object(model, headers_model)

    def build_request_body(
        self, model: type[Any], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body, components = super().build_request_body(model, source)
        return {**body, "required": True}, components


def init_openapi(app: Quart) -> None:
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,
        info=Info(
            title="quartchat",
            version=__version__,
            description=(
                "A self-hosted chat and streaming proxy for OpenAI-compatible servers. "
                'Every error has one shape, `{"error": {"code", "message", '
                '"request_id"}}`; state-changing requests must be JSON and may not come '
                "from other sites. The full contract: docs/api.md."
            ),
        ),
        openapi_provider_class=Provider,
    )
