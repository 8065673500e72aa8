"""The OpenAI-compatible upstream: one shared HTTP client, and the mapping of its failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from .config import Settings
from .errors import APIError, redact
from .schemas import AssistantMessage, ChatRequest, ChatResponse, ChatUsage
from .transport import AiohttpTransport


def message_of(body: bytes) -> str:
    """The human part of an upstream error body, whatever dialect it speaks."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(error.get(key), str):
                    return str(error[key])
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return body.decode("utf-8", "replace").strip()


class UpstreamClient:
    """Talks to `OPENAI_API_BASE`; opened and closed with the app's serving lifecycle."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        headers = {"Accept-Encoding": "identity", "Content-Type": "application/json"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        self.http = httpx.AsyncClient(
            base_url=settings.openai_api_base + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.request_timeout_seconds),
            transport=transport
            or AiohttpTransport(max_connections=settings.upstream_max_connections),
        )
        self._completions_url = self.http.base_url.join("chat/completions")
        self._timeout = self.http.timeout.as_dict()
        # Some servers reject `stream_options`; after the first refusal we stop sending it.
        self.include_usage = True
        self._models: tuple[float, list[str]] | None = None
        self._models_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()

    def error_for_status(self, response: httpx.Response, body: bytes) -> APIError:
        status = response.status_code
        detail = redact(message_of(body), self.settings.api_key) or response.reason_phrase
        if status in (401, 403):
            message = f"The upstream refused our credentials ({status}): {detail}"
            return APIError(502, "UPSTREAM_AUTH", message, upstream_status=status)
        if status == 429:
            retry_after = response.headers.get("retry-after")
            return APIError(
                429,
                "UPSTREAM_RATE_LIMITED",
                f"The upstream is rate limiting: {detail}",
                headers={"Retry-After": retry_after} if retry_after else None,
                upstream_status=status,
            )
        if 400 <= status < 500:
            return APIError(400, "UPSTREAM_REJECTED", detail, upstream_status=status)
        message = f"The upstream failed ({status}): {detail}"
        return APIError(502, "UPSTREAM_ERROR", message, upstream_status=status)

    @staticmethod
    def error_for_exception(exc: httpx.HTTPError) -> APIError:
        if isinstance(exc, httpx.TimeoutException):
            return APIError(504, "UPSTREAM_TIMEOUT", "The upstream did not answer in time.")
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
            return APIError(502, "UPSTREAM_UNREACHABLE", "Could not connect to the upstream.")
        return APIError(502, "UPSTREAM_ERROR", "The connection to the upstream failed.")

    async def _post(self, payload: dict[str, Any], *, stream: bool) -> httpx.Response:
        # Built directly rather than by `build_request()`, which re-merges the base URL, headers
        # and cookie jar on every call (a tenth of a request's CPU). A side benefit: cookies an
        # upstream sets are never sent back, so no user's session leaks into another's requests.
        request = httpx.Request(
            "POST",
            self._completions_url,
            headers=self.http.headers,
            content=orjson.dumps(payload),
            extensions={"timeout": self._timeout},
        )
        try:
            return await self.http.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise self.error_for_exception(exc) from None

    async def _read_error(self, response: httpx.Response) -> APIError:
        try:
            body = await response.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        return self.error_for_status(response, body)

    async def complete(self, chat: ChatRequest) -> ChatResponse:
        """A whole (non-streamed) completion."""
        payload = chat.upstream_payload(
            self.settings.openai_model, stream=False, include_usage=False
        )
        response = await self._post(payload, stream=False)
        if response.status_code >= 400:
            raise self.error_for_status(response, response.content)
        try:
            data = orjson.loads(response.content)
            choice = data["choices"][0]
            message = choice.get("message") or {}
            usage = data.get("usage")
            return ChatResponse(
                id=str(data.get("id") or ""),
                model=str(data.get("model") or payload["model"]),
                created=int(data.get("created") or time.time()),
                message=AssistantMessage(
                    content=message.get("content") or message.get("refusal") or ""
                ),
                finish_reason=choice.get("finish_reason"),
                usage=ChatUsage.model_validate(usage) if usage else None,
            )
        except (orjson.JSONDecodeError, LookupError, TypeError, ValueError, AttributeError):
            raise APIError(
                502, "UPSTREAM_ERROR", "The upstream sent a response that is not a chat completion."
            ) from None

    async def open_stream(self, chat: ChatRequest) -> tuple[httpx.Response, str]:
        """Start a streamed completion; return the open response (status 2xx) and the model asked for.

        Errors before the body starts (status, connection, timeout) raise `APIError`.
        """
        model = chat.model or self.settings.openai_model
        for include_usage in (True, False) if self.include_usage else (False,):
            payload = chat.upstream_payload(model, stream=True, include_usage=include_usage)
            response = await self._post(payload, stream=True)
            if response.status_code < 400:
                return response, model
            error = await self._read_error(response)
            if include_usage and _rejects_stream_options(response.status_code, error.message):
                self.include_usage = False
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def models(self) -> list[str]:
        """Model ids the upstream offers (cached), the configured default first."""
        default = self.settings.openai_model
        async with self._models_lock:
            now = time.monotonic()
            if self._models and self._models[0] > now:
                return self._models[1]
            ids = await self._fetch_models()
            ttl = (
                self.settings.models_cache_seconds
                if ids
                else min(30.0, self.settings.models_cache_seconds)
            )
            models = [default, *sorted(set(ids) - {default})]
            self._models = (now + ttl, models)
            return models

    async def _fetch_models(self) -> list[str]:
        if self.settings.needs_key:
            return []
        try:
            response = await self.http.get("models")
            if response.status_code >= 400:
                return []
            data = orjson.loads(response.content).get("data") or []
            return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError):
            return []


def _rejects_stream_options(status: int, message: str) -> bool:
    return status in (400, 422) and ("stream_options" in message or "include_usage" in message)
