"""Request and response shapes of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_TOKENS = 2**31 - 1


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The body of `POST /api/chat` and `POST /api/chat/stream`; unknown fields are ignored.

    Types are strict, as the schema says: `"5"` is not an integer and `true` is not a number.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    # Bounded so that every accepted value can be sent on (orjson stops at 64 bits) and no
    # upstream sees a number it could not parse.
    max_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS)

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _integral_number_is_an_integer(cls, value: object) -> object:
        # JSON Schema counts 512.0 as an integer; strict mode alone would refuse it.
        if type(value) is float and value.is_integer():
            return int(value)
        return value

    def upstream_payload(self, model: str, *, stream: bool, include_usage: bool) -> dict[str, Any]:
        """The OpenAI chat-completions body for this request, for the upstream's `model` (the
        route's id: an alias's target, or the default when the request names none)."""
        payload: dict[str, Any] = {
            "model": model,
            "messages": [m.model_dump() for m in self.messages],
            "stream": stream,
        }
        if stream and include_usage:
            payload["stream_options"] = {"include_usage": True}
        for name in ("temperature", "top_p", "max_tokens"):
            value = getattr(self, name)
            if value is not None:
                payload[name] = value
        return payload


class ChatUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatResponse(BaseModel):
    """The reply: the envelope of `POST /api/chat`, and the `done` event of the stream."""

    id: str
    model: str
    created: int
    message: AssistantMessage
    finish_reason: str | None
    usage: ChatUsage | None


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, e.g. INVALID_REQUEST or UPSTREAM_TIMEOUT (docs/api.md)")
    message: str
    request_id: str = Field(description="The X-Request-ID of the request, for the logs")
    details: list[dict[str, Any]] | None = Field(
        None, description="Invalid requests only: one {loc, msg, type} per failing field"
    )


class ErrorResponse(BaseModel):
    """An error: the one shape every error has, on every route."""

    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str | None = Field(description="OpenAI's: invalid_request_error, requests, server_error…")
    param: str | None = Field(description="The request field at fault, when one is")
    code: str | None = Field(
        description="OpenAI's (invalid_api_key, model_not_found, rate_limit_exceeded) or ours "
        "(docs/api.md), or the upstream's own"
    )


class OpenAIErrorResponse(BaseModel):
    """An error under /v1, in OpenAI's shape (its SDKs raise their usual exceptions from it)."""

    error: OpenAIErrorDetail


class HealthResponse(BaseModel):
    """The service is up (the upstream is not asked)."""

    status: Literal["ok"]
    version: str


class ModelPrice(BaseModel):
    """What a model costs, from UPSTREAMS_FILE's `prices`."""

    input_per_million: float = Field(description="US dollars per million prompt tokens")
    output_per_million: float = Field(description="US dollars per million completion tokens")


class ModelsResponse(BaseModel):
    """Models to choose from, the default first."""

    default: str = Field(
        description="The model of a request that names none: OPENAI_MODEL, or when it is unset "
        "the first model the upstream lists"
    )
    models: list[str] = Field(description="The models to offer, the default first")
    any_model: bool = Field(
        description="Whether a model not listed may be named too (MODELS_ALLOWED=*): a picker "
        "may take a typed name"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="One sentence per upstream that cannot be reached now, naming it: its "
        "models are left out of `models` until it answers again",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="The price of each listed model that has one (UPSTREAMS_FILE's `prices`)",
    )
