"""Request and response shapes of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The body of `POST /api/chat` and `POST /api/chat/stream`; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = Field(None, min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, gt=0)

    def upstream_payload(
        self, default_model: str, *, stream: bool, include_usage: bool
    ) -> dict[str, Any]:
        """The OpenAI chat-completions body for this request."""
        payload: dict[str, Any] = {
            "model": self.model or default_model,
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
    """The envelope of `POST /api/chat`, and the `done` event of the stream."""

    id: str
    model: str
    created: int
    message: AssistantMessage
    finish_reason: str | None
    usage: ChatUsage | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelsResponse(BaseModel):
    default: str
    models: list[str]
