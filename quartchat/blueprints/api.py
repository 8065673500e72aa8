from __future__ import annotations

from functools import partial

import orjson
from quart import Blueprint, Response, current_app, g
from quart_schema import document_response

from ..errors import APIError
from ..openapi import EventStream, document_errors
from ..schemas import ChatRequest, ChatResponse, ModelPrice, ModelsResponse
from ..streaming.encoders import ChatEvents, envelope
from ..streaming.watch import LiveStreams
from ..upstream.models import ModelPolicy
from . import admission
from .common import event_stream
from .validation import takes

blueprint = Blueprint("api", __name__, url_prefix="/api")

CHAT_EVENTS = ChatEvents()


def _streams() -> LiveStreams:
    streams: LiveStreams = current_app.extensions["streams"]
    return streams


def _json(payload: object) -> Response:
    return Response(orjson.dumps(payload), content_type="application/json")


def _ready() -> None:
    """Refuse a chat while the service drains, or while it has no key for OpenAI."""
    _streams().refuse_if_draining()
    if admission.registry().needs_key:
        raise APIError(
            503,
            "NOT_CONFIGURED",
            "No upstream API key: set OPENAI_API_KEY, or point OPENAI_API_BASE at a server "
            "that needs none (Ollama, llama.cpp, vLLM).",
        )


async def _admit(body: ChatRequest) -> admission.Admitted:
    _ready()
    return await admission.admit(
        "api",
        body.model,
        prompt_chars=sum(len(message.content) for message in body.messages),
        max_tokens=body.max_tokens,
    )


@blueprint.get("/models")
@document_response(ModelsResponse)
async def models() -> Response:
    """Models to choose from.

    The union of every upstream's `GET /models`, cached (aliases and allow-lists applied; the
    models MODELS_ALLOWED names for the default upstream), the default model first. An upstream
    that cannot be reached leaves out only its models, and `warnings` says so. `any_model`:
    names not listed are allowed too. `prices`: the priced models' US dollars per million tokens.
    """
    policy: ModelPolicy = current_app.extensions["models"]
    listing = await policy.listing(await admission.allowed_models())
    default = await policy.default()
    offered = ModelsResponse(
        default=default,
        models=[model.id for model in listing.models],
        any_model=policy.any_model,
        warnings=listing.warnings,
        prices={
            model.id: ModelPrice(
                input_per_million=model.price.input_per_million,
                output_per_million=model.price.output_per_million,
            )
            for model in listing.models
            if model.price is not None
        },
    )
    return _json(offered.model_dump())


CHAT_ERRORS = (400, 403, 413, 415, 429, 500, 502, 503, 504)


@blueprint.post("/chat")
@takes(ChatRequest, "chat request")
@document_response(ChatResponse)
@document_errors(*CHAT_ERRORS)
async def chat(body: ChatRequest) -> Response:
    """A whole chat completion.

    Returns the reply in one JSON envelope with finish_reason and token usage.
    """
    admitted = await _admit(body)
    route = admitted.routed
    status, completion = await admitted.whole(partial(route.client.complete, body, route.model))
    await admitted.meter(None).ended("done", completion, None)
    g.access.upstream_status = status
    g.access.usage = completion.usage
    return _json(envelope(completion, fresh_id=False))


@blueprint.post("/chat/stream")
@takes(ChatRequest, "chat request")
@document_response(EventStream)
@document_errors(*CHAT_ERRORS)
async def chat_stream(body: ChatRequest) -> Response:
    """A chat completion as server-sent events.

    `chunk` events carry text deltas, `done` the final envelope with usage, `error` a failure after
    the stream began; failures before it are plain HTTP errors.
    """
    admitted = await _admit(body)
    route = admitted.routed
    events = await admitted.stream(
        partial(route.client.open_stream, body, route.model), CHAT_EVENTS
    )
    g.access.streaming = True
    return event_stream(events)
