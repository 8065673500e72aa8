"""OpenAI's own API, for the tools that speak it (the openai SDK, Continue, aider, curl).

Requests and responses pass through byte-faithfully: the client's JSON object goes upstream with
every field it sent, only `model` replaced by the routed upstream's id (and `stream_options`
asked for on a stream, then taken out again: streaming/encoders.py); a whole answer comes back
with the upstream's status and bytes; a stream's chunks as the upstream sent them. Errors are in
OpenAI's shape (errors.py renders every error under /v1 so). Each request is admitted and
metered as the page's and /api's are (blueprints/admission.py).

Request bodies are documented (`document_request`) and checked against the same models, but
not `validate_request`ed: that would rebuild the body from the model, and only the client's own
object, as sent, is faithful (its key order, its numbers, fields no model names). Whole answers
are the upstream's bytes, so their models document what OpenAI sends rather than validate it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Blueprint, Response, current_app, g, request
from quart_schema import document_request, document_response, validate_response

from ..errors import APIError
from ..openapi import Described, document_errors
from ..schemas import MAX_TOKENS, OpenAIErrorResponse
from ..streaming.completion import Completion
from ..streaming.encoders import OpenAIPassthrough
from ..streaming.watch import LiveStreams
from ..upstream.client import UpstreamStream, not_a_completion, whole_completion
from ..upstream.models import ModelPolicy
from . import admission
from .common import event_stream
from .validation import INTEGRAL, invalid

blueprint = Blueprint("v1", __name__, url_prefix="/v1")

M = TypeVar("M", bound=BaseModel)
ERRORS = (400, 403, 404, 413, 415, 429, 500, 502, 503, 504)


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = Field(description="The upstream that serves it")


class ModelList(BaseModel):
    """The models you may ask for (OpenAI's `GET /v1/models`)."""

    object: Literal["list"] = "list"
    data: list[Model]


async def offered() -> list[Model]:
    """The models to list, each with the upstream that serves it."""
    policy: ModelPolicy = current_app.extensions["models"]
    listing = await policy.listing(await admission.allowed_models())
    return [Model(id=offer.id, owned_by=offer.upstream) for offer in listing.models]


@blueprint.get("/models")
@validate_response(ModelList)
@document_errors(500, shape=OpenAIErrorResponse)
async def models() -> ModelList:
    """Models, OpenAI's way.

    The models this service offers, as OpenAI lists its own.
    """
    return ModelList(data=await offered())


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Every field is sent on as it is, those not named here
    too (tools, response_format, logprobs, n, seed, vendor extensions); `model` is routed."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None


class ChatCompletion(Described):
    """The upstream's chat completion, as it sent it; with `"stream": true`, its
    `chat.completion.chunk`s as server-sent events (`data: {…}`, then `data: [DONE]`; an error
    after the stream began is a `data: {"error": {…}}` event)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None

    # Each event (the convention for text/event-stream, as openapi.EVENT_SCHEMA's): its `data`.
    other_media: ClassVar[dict[str, Any]] = {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {"data": {"type": "string"}},
            }
        }
    }


@blueprint.post("/chat/completions")
@document_request(ChatCompletionRequest)
@document_response(ChatCompletion)
@document_errors(*ERRORS, shape=OpenAIErrorResponse)
async def chat_completions() -> Response:
    """A chat completion, OpenAI's way.

    Sent to the upstream that serves the model, as the client sent it; answered as the
    upstream answered, whole or streamed.
    """
    payload = await _body(ChatCompletionRequest, "chat completion request")
    admitted = await admission.admit(
        "v1.chat",
        payload["model"],
        prompt_chars=_message_chars(payload["messages"]),
        max_tokens=_max_tokens(payload),
    )
    route = admitted.routed
    payload["model"] = route.model
    client = route.client
    client.limit_passed(payload)
    if payload.get("stream") is True:
        encoder = OpenAIPassthrough()

        async def open_stream() -> UpstreamStream:
            stream, encoder.strip_usage = await client.open_passthrough(payload)
            return stream

        body = await admitted.stream(open_stream, encoder)
        g.access.streaming = True
        return event_stream(body)

    async def whole() -> tuple[int, bytes, Completion]:
        status, answer = await client.pass_whole(payload)
        return status, answer, whole_completion(answer, route.public)

    status, answer, completion = await admitted.whole(whole)
    return await _answered(admitted, status, answer, completion)


TokenId = Annotated[int, Field(ge=0, le=MAX_TOKENS), INTEGRAL]


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request; every field is sent on as it is, `model` routed."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[TokenId] | list[list[TokenId]]


class Embeddings(BaseModel):
    """The upstream's embeddings, as it sent them."""

    model_config = ConfigDict(extra="allow")

    object: str
    data: list[dict[str, Any]]
    model: str
    usage: dict[str, Any] | None = None


@blueprint.post("/embeddings")
@document_request(EmbeddingRequest)
@document_response(Embeddings)
@document_errors(*ERRORS, shape=OpenAIErrorResponse)
async def embeddings() -> Response:
    """Embeddings, OpenAI's way.

    Sent to the upstream that serves the model, as the client sent it; answered as the
    upstream answered.
    """
    payload = await _body(EmbeddingRequest, "embeddings request")
    admitted = await admission.admit(
        "v1.embeddings", payload["model"], prompt_chars=_input_chars(payload["input"])
    )
    route = admitted.routed
    payload["model"] = route.model

    async def whole() -> tuple[int, bytes, Completion]:
        status, answer = await route.client.pass_whole(payload, "embeddings")
        return status, answer, _embeddings_usage(answer, route.public)

    status, answer, completion = await admitted.whole(whole)
    return await _answered(admitted, status, answer, completion)


async def _answered(
    admitted: admission.Admitted, status: int, answer: bytes, completion: Completion
) -> Response:
    """The upstream's whole answer, as it sent it; metered from its fold."""
    await admitted.meter(None).ended("done", completion, None)
    g.access.upstream_status = status
    g.access.usage = completion.usage
    return Response(answer, status=status, content_type="application/json")


async def _body(model: type[M], what: str) -> dict[str, Any]:
    """The client's JSON object as sent, once it is known to be a valid `model`; the service
    must be able to take it (not draining, an upstream key)."""
    _streams().refuse_if_draining()
    if admission.registry().needs_key:
        raise APIError(
            503, "NOT_CONFIGURED", "No upstream API key: the administrator must set one."
        )
    try:
        payload = orjson.loads(await request.get_data(cache=False))
    except orjson.JSONDecodeError:
        raise APIError(400, "INVALID_REQUEST", "The request body is not valid JSON.") from None
    if type(payload) is not dict:
        raise APIError(400, "INVALID_REQUEST", f"The request body is not a {what} (an object).")
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        raise invalid(exc, what) from None
    return payload


def _message_chars(messages: list[dict[str, Any]]) -> int:
    """The text of the messages, in characters (for the meter's estimate when the upstream
    reports no usage): string contents and the text parts of part lists."""
    total = 0
    for message in messages:
        content = message.get("content")
        if type(content) is str:
            total += len(content)
        elif type(content) is list:
            for part in content:
                if type(part) is dict and type(part.get("text")) is str:
                    total += len(part["text"])
    return total


def _max_tokens(payload: dict[str, Any]) -> int | None:
    """The most tokens the client asks the reply to take (what a budget reserves), if it says."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = payload.get(field)
        if type(value) is int and value > 0:
            return value
    return None


def _input_chars(value: Any) -> int:
    """An embeddings input's size in characters (token ids count as a token's worth each)."""
    if type(value) is str:
        return len(value)
    if type(value) is int:
        return 4
    if type(value) is list:
        return sum(_input_chars(item) for item in value)
    return 0


def _embeddings_usage(answer: bytes, model: str) -> Completion:
    """An embeddings answer's usage, as a fold (no text); not an object: 502."""
    completion = Completion(model)
    try:
        completion.fold_usage(orjson.loads(answer))
    except (orjson.JSONDecodeError, APIError):
        raise not_a_completion("embeddings") from None
    return completion


def _streams() -> LiveStreams:
    streams: LiveStreams = current_app.extensions["streams"]
    return streams
