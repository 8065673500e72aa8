"""The OpenAI-compatible upstream: one shared HTTP client, and the one place its failures are mapped.

Every way the upstream can fail -- an error status, a transport failure, an error reported inside
a stream that began with 200 -- becomes an `APIError` here, with its text stripped of markup and
credentials. Callers see `APIError`s and chat-completion chunks, never httpx or aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Literal

import httpx
import orjson

from ..config import Settings
from ..errors import APIError, Redactor, plain_text, retry_after
from ..schemas import ChatRequest
from ..streaming.completion import Chunk, Completion
from ..streaming.sse import SSEEvent, SSEParser
from .config import Upstream
from .transport import STREAM_EXTENSION, AiohttpStream, AiohttpTransport, Answer, Target

log = logging.getLogger("quartchat")

BUILT_IN_MODEL = "gpt-4o-mini"
"""The default model when OPENAI_MODEL is unset and the upstream's list names none."""
UPSTREAM_AUTH_MESSAGE = (
    "The service's connection to the model provider is misconfigured; tell the administrator."
)
"""What users are told of a 401/403 from the upstream: its own text (get a key at …) is for the
operator, who finds it in the log and on the admin page."""

STREAM_OPTIONS_MEMORY_SECONDS = 3600.0
"""How long a model's refusal of `stream_options` is remembered (a server may be upgraded)."""
STREAM_OPTIONS_MEMORY_SIZE = 1024
"""Models remembered at most: the model name comes from the request, so the memory is bounded."""


def message_of(body: bytes) -> str:
    """The human part of an upstream error body, whatever dialect it speaks."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return plain_text(body.decode("utf-8", "replace"))
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


def error_for_exception(exc: httpx.HTTPError) -> APIError:
    if isinstance(exc, httpx.TimeoutException):
        return APIError(504, "UPSTREAM_TIMEOUT", "The upstream did not answer in time.")
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return APIError(502, "UPSTREAM_UNREACHABLE", "Could not connect to the upstream.")
    return APIError(502, "UPSTREAM_ERROR", "The connection to the upstream failed.")


def not_a_completion(what: str) -> APIError:
    return APIError(502, "UPSTREAM_ERROR", f"The upstream sent a response that is not {what}.")


def whole_completion(body: bytes, model: str) -> Completion:
    """A whole (non-streamed) chat completion's body, folded as a stream's chunks are
    (`Completion.fold_whole`); anything else is 502 `UPSTREAM_ERROR`."""
    completion = Completion(model)
    try:
        completion.fold_whole(orjson.loads(body))
    except (orjson.JSONDecodeError, APIError):
        raise not_a_completion("a chat completion") from None
    return completion


async def _drained(response: httpx.Response) -> bytes:
    """The rest of a refused response's body (what it says went wrong), and the response
    closed; b"" if the body cannot be read."""
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


def malformed_data() -> APIError:
    return APIError(502, "UPSTREAM_ERROR", "The upstream sent data that is not a JSON object.")


class UpstreamStream:
    """A streamed completion that has begun: batches of chunks, one batch per network read.

    Iterate with `async for` or `await stream.__anext__()`. The wait inside `__anext__` can be
    abandoned (cancelled) without losing anything: state changes only after a read returns.
    A batch may be empty (the read held only comments or part of a line), which still tells the
    caller the upstream is alive. The stream ends (StopAsyncIteration) at `data: [DONE]` or when
    the upstream closes; `saw_done` says which. An in-band error, malformed data or a transport
    failure raises `APIError` -- an error found in the data only on the call after the one that
    hands out the chunks before it (so no text is lost, and an error in the first bytes is
    reported the same way, after the stream began, however the reads fell).
    """

    __slots__ = (
        "_close",
        "_end",
        "_error",
        "_parser",
        "_primed",
        "_read",
        "_redact",
        "model",
        "saw_done",
        "status",
    )

    def __init__(
        self,
        read: Callable[[], Awaitable[bytes]],
        close: Callable[[], Awaitable[None]],
        *,
        model: str,
        status: int = 200,
        redact: Redactor | None = None,
    ) -> None:
        self._read = read
        self._close = close
        self._redact = redact or Redactor()
        self._parser = SSEParser()
        self._error: APIError | None = None
        self._end = False
        self._primed: list[Chunk] | None = None
        self.model = model
        self.status = status
        self.saw_done = False

    def __aiter__(self) -> UpstreamStream:
        return self

    async def prime(self) -> None:
        """Wait for the first bytes (the next `__anext__` returns their chunks).

        A failure, or a body that ends before saying anything, raises APIError.
        """
        try:
            self._primed = await self.__anext__()
        except StopAsyncIteration:
            raise APIError(
                502, "UPSTREAM_ERROR", "The upstream ended the stream without sending anything."
            ) from None

    async def __anext__(self) -> list[Chunk]:
        if self._primed is not None:
            batch, self._primed = self._primed, None
            return batch
        if self._error is not None:
            error, self._error = self._error, None
            self._end = True
            raise error
        if self._end:
            raise StopAsyncIteration
        try:
            data = await self._read()
        except httpx.HTTPError as exc:
            self._end = True
            raise error_for_exception(exc) from None
        if data:
            return self._batch(self._parser.feed(data))
        self._end = True
        batch = self._batch(self._parser.close())
        if batch or self._error is not None:
            return batch
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._end = True
        await self._close()

    def _batch(self, events: list[SSEEvent]) -> list[Chunk]:
        batch: list[Chunk] = []
        for kind, data in events:
            if data == "[DONE]":
                self.saw_done = self._end = True
                break
            if kind == "error":
                self._error = self._in_band_error(data)
                break
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                self._error = malformed_data()
                break
            if type(obj) is not dict:
                self._error = malformed_data()
                break
            if obj.get("error"):
                self._error = self._in_band_error(data)
                break
            batch.append(Chunk(data, obj))
        return batch

    def _in_band_error(self, data: str) -> APIError:
        detail = self._redact(message_of(data.encode()))
        return APIError(502, "UPSTREAM_ERROR", f"The upstream reported an error: {detail}")


class UpstreamClient:
    """Talks to one upstream; opened and closed with the app's serving lifecycle.

    `upstream`: which one (its name, base URL, key, timeout, connections; upstream/config.py);
    None: the one of OPENAI_API_BASE and OPENAI_API_KEY. The settings give what all upstreams
    share (MAX_TOKENS_LIMIT, MODELS_CACHE_SECONDS) and, for that one, OPENAI_MODEL and
    MODELS_ALLOWED.
    """

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        upstream: Upstream | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = upstream = upstream or Upstream.from_settings(settings)
        self.name = upstream.name
        self.needs_key = upstream.needs_key
        headers = {"Accept-Encoding": "identity", "Content-Type": "application/json"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        self.redact = Redactor(upstream.api_key)
        self._transport = transport or AiohttpTransport(max_connections=upstream.max_connections)
        self.http = httpx.AsyncClient(
            base_url=upstream.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(upstream.timeout_seconds),
            transport=self._transport,
        )
        # OPENAI_MODEL and MODELS_ALLOWED are the environment's upstream's; another's default
        # comes from its own allow-list or list.
        self._fixed_default = (
            settings.openai_model if upstream.from_env and settings.openai_model_set else None
        )
        named = settings.models_allowed if upstream.from_env else list(upstream.models or ())
        self.named_models: list[str] = [] if "*" in named else list(named)
        """The models the allow-list names (MODELS_ALLOWED for the environment's upstream, or
        `models` in UPSTREAMS_FILE); empty: those `/models` lists (or any, for `*`)."""
        self._named_source: DefaultSource = "MODELS_ALLOWED" if upstream.from_env else "models"
        # A jar that keeps nothing: httpx stores every response's cookies and `get()` sends them
        # back, so one user's upstream cookie would go out with shared requests (the model list).
        self.http.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._timeout = self.http.timeout.as_dict()
        # The production transport is sent requests straight (`AiohttpTransport.post`), to a
        # target worked out once per path; any other (a test's) through httpx's own types.
        self._aiohttp = self._transport if isinstance(self._transport, AiohttpTransport) else None
        self._targets: dict[str, Target] = {}
        # Models whose server refused `stream_options`, until when (monotonic): a refusal is
        # remembered per model, so one request naming an old model changes nothing for others.
        self._no_stream_options: OrderedDict[str, float] = OrderedDict()
        self._models: tuple[float, ModelList] | None = None
        self._models_lock = asyncio.Lock()
        # What the log last said of the default model, so a refresh of the list that changes
        # nothing says nothing again.
        self._announced: tuple[str, str, bool | None] | None = None
        self.last_auth_failure: AuthFailure | None = None
        """The upstream's last refusal of our credentials, in this process (the admin page)."""

    async def aclose(self) -> None:
        await self.http.aclose()

    def error_for_status(self, answer: Answer) -> APIError:
        """The error a refusal (`answer`, status 400 or more) is to the client."""
        status = answer.status
        detail = self.redact(message_of(answer.body), limit=300) or answer.reason
        if status in (401, 403):
            self._auth_refused(status, detail)
            return APIError(502, "UPSTREAM_AUTH", UPSTREAM_AUTH_MESSAGE, upstream_status=status)
        if status == 429:
            wait = retry_after(answer.headers.get("retry-after"))
            return APIError(
                429,
                "UPSTREAM_RATE_LIMITED",
                f"The upstream is rate limiting: {detail}",
                headers={"Retry-After": wait} if wait else None,
                upstream_status=status,
            )
        if 400 <= status < 500:
            return APIError(400, "UPSTREAM_REJECTED", detail, upstream_status=status)
        message = f"The upstream failed ({status}): {detail}"
        return APIError(502, "UPSTREAM_ERROR", message, upstream_status=status)

    def _auth_refused(self, status: int, detail: str) -> None:
        """Keep and log the upstream's refusal of our credentials (`detail`: redacted)."""
        self.last_auth_failure = AuthFailure(status, detail, datetime.now(UTC))
        # Not the base URL: it may carry a user and password.
        log.error("the upstream refused our credentials (%d): %s", status, detail)

    async def _post(
        self, payload: dict[str, Any], *, stream: bool, path: str = "chat/completions"
    ) -> Answer:
        """POST `payload` to `path`: a whole answer's body read (`stream` False), else the
        stream of one that began, or a refusal's body; a transport failure raises APIError."""
        content = orjson.dumps(payload)
        try:
            if self._aiohttp is None:
                return await self._post_httpx(path, content, stream)
            target = self._targets.get(path)
            if target is None:
                target = self._aiohttp.target(self._url(path), self.http.headers, self._timeout)
                self._targets[path] = target
            # No httpx Request or Response: building them and reading a body through them was
            # a tenth of a whole request's CPU.
            return await self._aiohttp.post(target, content, whole=not stream)
        except httpx.HTTPError as exc:
            raise error_for_exception(exc) from None

    def _url(self, path: str) -> httpx.URL:
        # Joined per call only on a test's transport: the production one keeps a Target per path.
        return self.http.base_url.join(path)

    async def _post_httpx(self, path: str, content: bytes, stream: bool) -> Answer:
        # Straight to the transport: the client's `send` adds nothing these requests use
        # (no auth flow, no redirect to follow, a cookie jar that keeps nothing).
        request = httpx.Request(
            "POST",
            self._url(path),
            headers=self.http.headers,
            content=content,
            extensions={"timeout": self._timeout},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        status, headers = response.status_code, response.headers
        if not stream:
            try:
                await response.aread()
            finally:
                await response.aclose()
            return Answer(status, headers, response.content)
        if status >= 400:
            return Answer(status, headers, await _drained(response))
        body = response.extensions.get(STREAM_EXTENSION)
        return Answer(
            status,
            headers,
            stream=body if isinstance(body, AiohttpStream) else None,
            close=response.aclose,
        )

    async def complete(self, chat: ChatRequest, model: str | None = None) -> tuple[int, Completion]:
        """A whole (non-streamed) completion, folded, and the upstream's status. `model`: as for
        `open_stream`."""
        model = model or chat.model or await self.default_model()
        payload = chat.upstream_payload(model, stream=False, include_usage=False)
        self._limit(payload)
        answer = await self._post(payload, stream=False)
        if answer.status >= 400:
            raise self.error_for_status(answer)
        return answer.status, whole_completion(answer.body, model)

    async def open_stream(self, chat: ChatRequest, model: str | None = None) -> UpstreamStream:
        """Start a streamed completion and wait for its first bytes.

        `model`: the upstream's id for the model (a route's, aliases applied); None: the one
        `chat` names, else the default. Everything that fails before then (status, connection,
        no first byte in time) raises `APIError`, so the caller can still answer with a real
        HTTP status.
        """
        model = model or chat.model or await self.default_model()
        include_usage = self._may_ask_for_usage(model)
        while True:
            payload = chat.upstream_payload(model, stream=True, include_usage=include_usage)
            self._limit(payload)
            answer = await self._post(payload, stream=True)
            if answer.status < 400:
                break
            error = self.error_for_status(answer)
            if include_usage and _rejects_stream_options(answer.status, error.message):
                self._refused_stream_options(model)
                include_usage = False
                continue
            raise error
        return await self._begin(answer, model)

    async def pass_whole(
        self, payload: dict[str, Any], path: str = "chat/completions"
    ) -> tuple[int, bytes]:
        """POST a client's OpenAI request (`payload`, sent as it is) to `path`; the upstream's
        status and body, byte for byte. A failure raises `APIError`; a 4xx other than 401/403
        carries the upstream's own error object, redacted (`APIError.upstream_error`), for /v1
        to answer as the upstream did."""
        answer = await self._post(payload, stream=False, path=path)
        if answer.status >= 400:
            raise self.passed_error(answer)
        return answer.status, answer.body

    async def open_passthrough(self, payload: dict[str, Any]) -> tuple[UpstreamStream, bool]:
        """Start a client's streamed OpenAI request (`payload`, sent as it is) and wait for its
        first bytes, as `open_stream` does; and whether usage was asked for on the client's
        behalf (the client did not, so what that adds is to be taken out of what it gets).

        The usage is asked for unless the upstream refused `stream_options` for this model
        lately; a refusal now is remembered and the client's request sent again as it was.
        """
        model = str(payload["model"])
        own = payload.get("stream_options")
        asked = type(own) is dict and own.get("include_usage") is True
        added = not asked and self._may_ask_for_usage(model)
        while True:
            sent = payload
            if added:
                extra = own if type(own) is dict else {}
                sent = {**payload, "stream_options": {**extra, "include_usage": True}}
            answer = await self._post(sent, stream=True)
            if answer.status < 400:
                break
            if added and _rejects_stream_options(answer.status, message_of(answer.body)):
                self._refused_stream_options(model)
                added = False
                continue
            raise self.passed_error(answer)
        return await self._begin(answer, model), added

    def passed_error(self, answer: Answer) -> APIError:
        """`error_for_status`, and for a 4xx other than 401/403 (which stay ours: the upstream
        refused our key, not the user's) the upstream's error object, its text redacted."""
        error = self.error_for_status(answer)
        status = answer.status
        if 400 <= status < 500 and status not in (401, 403):
            error.upstream_error = self._error_object(answer.body)
        return error

    def _error_object(self, body: bytes) -> dict[str, Any]:
        """The upstream's `{"message", "type", "param", "code"}`, credentials removed from every
        text in it; one made of its text when it speaks another dialect."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        found = data.get("error") if isinstance(data, dict) else None
        if not isinstance(found, dict) or not isinstance(found.get("message"), str):
            found = {"message": message_of(body), "type": "invalid_request_error"}
        error: dict[str, Any] = {"message": "", "type": None, "param": None, "code": None}
        for key, value in found.items():
            error[key] = self.redact(value, limit=2000) if isinstance(value, str) else value
        return error

    def _refused_stream_options(self, model: str) -> None:
        self._no_stream_options[model] = time.monotonic() + STREAM_OPTIONS_MEMORY_SECONDS
        while len(self._no_stream_options) > STREAM_OPTIONS_MEMORY_SIZE:
            self._no_stream_options.popitem(last=False)

    async def _begin(self, answer: Answer, model: str) -> UpstreamStream:
        """The stream of an answer that began (a 2xx), once its first bytes are in."""
        body = answer.stream
        if body is None:
            await answer.close()
            raise TypeError("streams need the aiohttp transport (its reads are cancel-safe)")
        stream = UpstreamStream(
            body.read_chunk,
            answer.close,
            model=model,
            status=answer.status,
            redact=self.redact,
        )
        try:
            await stream.prime()
        except BaseException:
            await answer.close()
            raise
        # From here the caller times the gaps between reads (streaming/watch.py does, with one
        # timer per stream instead of aiohttp's, re-armed on every packet).
        body.stop_read_timeout()
        return stream

    def _may_ask_for_usage(self, model: str) -> bool:
        until = self._no_stream_options.get(model)
        if until is None:
            return True
        if until > time.monotonic():
            return False
        del self._no_stream_options[model]
        return True

    def limit_passed(self, payload: dict[str, Any]) -> None:
        """MAX_TOKENS_LIMIT on a client's OpenAI request: on `max_completion_tokens` when it
        names it (newer models refuse `max_tokens`), else on `max_tokens` (added if absent)."""
        limit = self.settings.max_tokens_limit
        if limit is None:
            return
        key = "max_completion_tokens" if "max_completion_tokens" in payload else "max_tokens"
        value = payload.get(key)
        if value is None or (type(value) in (int, float) and value >= limit):
            payload[key] = limit

    def _limit(self, payload: dict[str, Any]) -> None:
        """MAX_TOKENS_LIMIT: every request asks for at most that many tokens (a request that
        names no `max_tokens` is sent the limit, or the upstream's own default would apply)."""
        limit = self.settings.max_tokens_limit
        if limit is not None and payload.get("max_tokens", limit) >= limit:
            payload["max_tokens"] = limit

    async def models(self) -> list[str]:
        """Model ids the upstream offers (cached), the default first."""
        return (await self.model_list()).ids

    async def default_model(self) -> str:
        """The model of a request that names none: OPENAI_MODEL when it is set, else one the
        upstream lists (from the cached list; see `choose_default`)."""
        if self._fixed_default is not None:
            return self._fixed_default
        return (await self.model_list()).default

    def default_model_now(self) -> str:
        """`default_model` without waiting: from the list as last fetched, if any (for a page
        that must not wait for the upstream; the page asks `/api/models` anyway)."""
        if self._fixed_default is not None or self._models is None:
            return self.settings.openai_model
        return self._models[1].default

    async def model_list(self) -> ModelList:
        """The upstream's models (cached), and whether its `/models` could be read at all."""
        # Asked per request when OPENAI_MODEL is unset: a fresh list is answered without the lock.
        cached = self._models
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
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
            previous = self._models[1] if self._models else None
            # A list that cannot be read for a while (the server restarting) keeps the default
            # it last gave, rather than falling back to a model it may not serve.
            last = previous.default if previous and previous.source == "upstream" else None
            default, source = choose_default(
                self._fixed_default, self.named_models, ids, last, self._named_source
            )
            listed = ModelList(
                [default, *sorted(set(ids or ()) - {default})],
                ids is not None,
                default,
                source,
                None if ids is None else default in ids,
            )
            self._models = (now + ttl, listed)
            self._announce(listed)
            return listed

    def _announce(self, listed: ModelList) -> None:
        """Say in the log which default was chosen, or that OPENAI_MODEL is not listed."""
        said = (listed.default, listed.source, listed.default_listed)
        # OPENAI_MODEL is the environment's upstream's: another's default goes unsaid.
        if said == self._announced or not self.upstream.from_env:
            return
        if listed.source == "OPENAI_MODEL" and listed.default_listed is False:
            log.warning(
                "OPENAI_MODEL=%s is not among the models the upstream lists; requests that name "
                "no model may fail (GET /api/models shows the list)",
                listed.default,
            )
        elif listed.source == "upstream":
            log.info(
                "OPENAI_MODEL is not set: the default model is %s, as the upstream lists it",
                listed.default,
            )
        elif listed.source == "MODELS_ALLOWED":
            log.info(
                "OPENAI_MODEL is not set: the default model is %s, from MODELS_ALLOWED",
                listed.default,
            )
        self._announced = said

    async def check_models(self) -> None:
        """At start: read the model list once, so the log says which default is used, or that
        OPENAI_MODEL is not listed, or that the list cannot be read (never raises)."""
        if self.needs_key:
            return
        try:
            listed = await self.model_list()
        except Exception as exc:  # a start-up check must not stop the service
            log.warning("could not check the upstream's models: %s", type(exc).__name__)
            return
        if not listed.fetched:
            log.warning(
                "could not read the upstream's list of models (GET /models); the default model "
                "is %s for now",
                listed.default,
            )

    async def _fetch_models(self) -> list[str] | None:
        """The ids `GET /models` lists, in its order, or None when it cannot be read."""
        if self.needs_key:
            return None
        try:
            response = await self.http.get("models")
            if response.status_code in (401, 403):
                detail = self.redact(message_of(response.content), limit=300)
                self._auth_refused(response.status_code, detail or response.reason_phrase)
            if response.status_code >= 400:
                return None
            data = orjson.loads(response.content).get("data") or []
            ids = [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
            return list(dict.fromkeys(ids))
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError):
            return None


DefaultSource = Literal["OPENAI_MODEL", "upstream", "MODELS_ALLOWED", "models", "built-in"]
"""Where a default model comes from; "models": the allow-list of an upstream in UPSTREAMS_FILE."""


def choose_default(
    fixed: str | None,
    named: list[str],
    listed: list[str] | None,
    last: str | None = None,
    named_source: DefaultSource = "MODELS_ALLOWED",
) -> tuple[str, DefaultSource]:
    """The default model, and where it came from: `fixed` (OPENAI_MODEL) when set (listed or
    not); else, of the models the upstream lists that `named` (MODELS_ALLOWED, or the upstream's
    allow-list; empty: any) allows, BUILT_IN_MODEL if among them, else the first (in the
    upstream's order); else `named`'s first; else the one the list gave `last` (it cannot be
    read now); else BUILT_IN_MODEL."""
    if fixed is not None:
        return fixed, "OPENAI_MODEL"
    candidates = [m for m in listed or () if not named or m in named]
    # OpenAI's own list starts with whatever it likes (dall-e-2, whisper-1): where the built-in
    # default is listed, it stays the default, as it was before the list was asked.
    if BUILT_IN_MODEL in candidates:
        return BUILT_IN_MODEL, "upstream"
    if candidates:
        return candidates[0], "upstream"
    if named:
        return named[0], named_source
    if listed is None and last is not None:
        return last, "upstream"
    return BUILT_IN_MODEL, "built-in"


@dataclass(frozen=True, slots=True)
class ModelList:
    """The models an upstream lists, the default first; `fetched` is False when its `/models`
    could not be read (then `ids` is just the default). `default_listed`: whether the upstream
    lists the default (None: the list could not be read)."""

    ids: list[str]
    fetched: bool
    default: str
    source: DefaultSource
    default_listed: bool | None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """The upstream refused our credentials: its status, its message (redacted), when."""

    status: int
    message: str
    at: datetime


def _rejects_stream_options(status: int, message: str) -> bool:
    return status in (400, 422) and ("stream_options" in message or "include_usage" in message)
