"""The API's description: OpenAPI 3.1 built by quart-schema from the routes' documented models.

`/openapi.json` is quart-schema's; the page at `/docs` is ours (blueprints/ui.py), because
quart-schema's pages load Swagger UI from a CDN and start it with an inline script, which the
page CSP forbids. Ours loads the vendored Swagger UI and starts it from static/docs.js.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel
from quart import Quart, Response
from quart_schema import DataSource, Info, OpenAPIProvider, QuartSchema, document_response
from werkzeug.routing import BaseConverter, IntegerConverter, Rule, UUIDConverter

from . import __version__
from .auth.cookies import COOKIE_NAME
from .config import Settings
from .errors import V1_PREFIX
from .schemas import ChatResponse, ErrorResponse, OpenAIErrorResponse

F = TypeVar("F", bound=Callable[..., Any])


def document_errors(*statuses: int, shape: type[BaseModel] = ErrorResponse) -> Callable[[F], F]:
    """Document the error shape for each of `statuses` (every error has that one shape; under
    /v1, OpenAI's: `shape=OpenAIErrorResponse`)."""

    def decorate(view: F) -> F:
        for status in statuses:
            view = document_response(shape, status)(view)
        return view

    return decorate


class Ok(BaseModel):
    """Done."""

    ok: Literal[True]


class Described(BaseModel):
    """A response model whose answer also has headers, other media types or links worth
    documenting.

    `response_headers` maps a header to its OpenAPI header object; `other_media` maps a media
    type to its OpenAPI media type object, beside the model's own `application/json`;
    `response_links` names the operations the answer leads to (`link()`), which clients and
    schemathesis's stateful tests follow.
    """

    response_headers: ClassVar[dict[str, Any]] = {}
    other_media: ClassVar[dict[str, Any]] = {}
    response_links: ClassVar[dict[str, Any]] = {}


def link(operation: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation whose view is `operation` (quart-schema names it
    `<method>_<view>`), its parameters taken from this answer by runtime expressions."""
    return {"operationId": operation, "parameters": parameters}


class EventStream(Described):
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


# With accounts, the gate asks every request for one of these, except on `public` routes.
SECURITY_SCHEMES = {
    "token": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (`qc_…`), made at `POST /api/auth/tokens`",
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE_NAME,
        "description": "The session cookie of a login (`POST /api/auth/login`)",
    },
}


class Provider(OpenAPIProvider):
    """quart-schema's provider, taught that a stream's body is not JSON, that a documented
    request body and a required query parameter are required, what a path's converters accept,
    and, with accounts, which routes need a credential (and that a bad one is a 401 anywhere)."""

    def accounts(self) -> bool:
        settings: Settings = self._app.config["QUARTCHAT"]
        return settings.accounts

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        if self.accounts():
            document["components"]["securitySchemes"] = SECURITY_SCHEMES
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        if not self.accounts():
            return paths, components
        v1 = rule.rule.startswith(V1_PREFIX)
        unauthenticated, error_components = self.build_response_object(
            OpenAIErrorResponse if v1 else ErrorResponse, None
        )
        public = getattr(self._app.view_functions[rule.endpoint], "quartchat_public", False)
        # /v1 takes an API token only (auth/principal.py says why).
        schemes = ["token"] if v1 else list(SECURITY_SCHEMES)
        for operations in paths.values():
            for operation in operations.values():
                operation["responses"].setdefault(401, unauthenticated)
                if not public:
                    operation["security"] = [{name: []} for name in schemes]
        return paths, {**components, **error_components}

    def build_response_object(
        self, model: type[Any], headers_model: type[Any] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if issubclass(model, EventStream):
            description = (model.__doc__ or "").strip()
            content = {"text/event-stream": {"schema": EVENT_SCHEMA}}
            response: dict[str, Any] = {"description": description, "content": content}
            components = _components(ChatResponse, ErrorResponse)
        else:
            response, components = super().build_response_object(model, headers_model)
        if issubclass(model, Described):
            response["content"].update(model.other_media)
            if model.response_headers:
                response["headers"] = model.response_headers
            if model.response_links:
                response["links"] = model.response_links
        return response, components

    def build_request_body(
        self, model: type[Any], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        body, components = super().build_request_body(model, source)
        return {**body, "required": True}, components

    def build_querystring_parameters(
        self, model: type[Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        parameters, components = super().build_querystring_parameters(model)
        required = set(model.model_json_schema().get("required", []))
        for parameter in parameters:
            parameter["required"] = parameter["name"] in required
        return parameters, components

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if isinstance(converter, IntegerConverter):
            low = 0 if converter.min is None and not converter.signed else converter.min
            bounds = {"minimum": low, "maximum": converter.max}
            parameter["schema"].update({k: v for k, v in bounds.items() if v is not None})
        elif isinstance(converter, UUIDConverter):
            parameter["schema"]["format"] = "uuid"
        elif pattern := getattr(converter, "schema_pattern", None):
            parameter["schema"]["pattern"] = pattern
        return parameter


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
                '"request_id"}}` (under /v1, OpenAI\'s own); state-changing requests must be '
                "JSON and may not come from other sites. With accounts, every route not open "
                "to all takes an API token (`Authorization: Bearer qc_…`) or the login's "
                "session cookie (/v1: the token only). The full contract: docs/api.md."
            ),
        ),
        openapi_provider_class=Provider,
    )
    converting = app.make_response  # quart-schema's: it converts models a view returns

    async def make_response(result: Any) -> Any:
        # Our views return finished Responses, which neither quart-schema nor Quart change: a
        # few microseconds a request saved by not asking them.
        if isinstance(result, Response):
            return result
        return await converting(result)

    app.make_response = make_response  # type: ignore[method-assign]
