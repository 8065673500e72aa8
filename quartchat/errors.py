"""One vocabulary of errors: `APIError` is raised anywhere and rendered in one place."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from quart import Quart, Response, g, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("quartchat")

# Status codes the framework itself raises, mapped onto our codes.
HTTP_CODES = {
    400: "INVALID_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "INVALID_REQUEST",
}


class APIError(Exception):
    """An error with a stable code, sent as `{"error": {"code", "message", "request_id"}}`."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.upstream_status = upstream_status

    def payload(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "request_id": request_id,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}


def current_request_id() -> str:
    return str(g.get("request_id", "-"))


def error_response(error: APIError) -> Response:
    response = Response(
        orjson.dumps(error.payload(current_request_id())),
        status=error.status_code,
        content_type="application/json",
    )
    response.headers.update(error.headers)
    return response


_CREDENTIAL_SHAPES = (
    # Provider key prefixes (OpenAI sk-/sk-proj-, Groq gsk_, xAI, Anthropic sk-ant-, Google AIza).
    (re.compile(r"\b(?:sk|pk|rk|gsk|xai|sess)[-_][A-Za-z0-9_\-*.]{6,}"), "[redacted]"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), "[redacted]"),
    # Any Authorization value, whatever its scheme, and a bare bearer token.
    (
        re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+(?:\s+[^\s\"',}]+)?"),
        r"\1[redacted]",
    ),
    (re.compile(r"(?i)\bbearer\s+[^\s\"',}]+"), "Bearer [redacted]"),
    (
        re.compile(
            r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
        ),
        r"\1[redacted]",
    ),
)
_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


class Redactor:
    """Removes credentials from upstream text before it reaches a client or a log.

    The configured key is removed whatever it looks like (an Azure key is 32 hex digits, which
    no pattern could tell from a hash), in any case, with any of its characters percent-encoded
    (an upstream that echoes the URL it was called with), and so is any prefix of it of
    `PREFIX` characters or more (an upstream that echoes it cut short); then anything shaped
    like a credential.
    """

    PREFIX = 8

    __slots__ = ("_secrets",)

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a key that contains another secret is removed whole.
        known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._secrets = (
            re.compile("|".join(_any_form(s, self.PREFIX) for s in known), re.IGNORECASE)
            if known
            else None
        )

    def __call__(self, text: str, limit: int = 500) -> str:
        # The text is matched as it is, not decoded: what is replaced is what would be sent.
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        for pattern, replacement in _CREDENTIAL_SHAPES:
            text = pattern.sub(replacement, text)
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _any_form(secret: str, prefix: int) -> str:
    """A pattern for `secret`, or its first `prefix` characters and as many more as follow,
    each character either itself or percent-encoded (IGNORECASE then covers both the letters'
    case and the hex digits' case)."""
    chars = [_char(c) for c in secret]
    if len(chars) <= prefix:
        return "".join(chars)
    # a(?:b(?:c)?)?: the longest prefix present, each optional character nested in the last.
    rest = ""
    for char in reversed(chars[prefix:]):
        rest = f"(?:{char}{rest})?"
    return "".join(chars[:prefix]) + rest


def _char(c: str) -> str:
    forms = {re.escape(c)}
    for variant in {c, c.lower(), c.upper()}:
        forms.add("".join(f"%{byte:02x}" for byte in variant.encode()))
    return "(?:" + "|".join(sorted(forms)) + ")"


def plain_text(body: str) -> str:
    """Readable text from an upstream error body: an HTML page becomes its title (or its text)."""
    if "<" not in body or not re.search(r"(?i)<(!doctype|html|head|body|title|h1|p|div)\b", body):
        return body.strip()
    title = _TITLE.search(body)
    text = _TAGS.sub(" ", title.group(1) if title else body)
    return html.unescape(_SPACE.sub(" ", text)).strip()


def retry_after(value: str | None) -> str | None:
    """`value` if it is a valid Retry-After (delay-seconds or an HTTP date), else None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and len(value) <= 10:
        return value
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return value


DISCARD_SECONDS = 2.0


async def _discard_rest_of_body() -> None:
    """Let the client finish sending a refused body (for up to DISCARD_SECONDS) before answering.

    Closing a connection with unread bytes makes the kernel send a reset, and a proxy still
    writing the body (Caddy) then reports 502 instead of our 413. Quart drops the bytes of a
    body over the limit as they arrive; this only waits for the last of them, as nginx's
    lingering close and Go's net/http do.
    """
    with contextlib.suppress(TimeoutError):
        # Quart has no public "body complete" wait; `await request.body` raises at once.
        await asyncio.wait_for(request.body._complete.wait(), DISCARD_SECONDS)


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(APIError)
    async def _api_error(error: APIError) -> Response:
        if error.upstream_status is not None and "access" in g:
            g.access.upstream_status = error.upstream_status
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "INVALID_REQUEST")
        message = error.description or error.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request body is larger than the {limit} byte limit."
            await _discard_rest_of_body()
        response = error_response(APIError(status, code, message))
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        # Log the type only: exception text can carry request data or upstream secrets.
        log.error("unhandled %s in request %s", error_kind(error), current_request_id())
        return error_response(APIError(500, "INTERNAL_ERROR", "An unexpected error occurred."))


def error_kind(error: Exception) -> str:
    """The exception's type; for a database error also the driver's error code (SQLITE_BUSY,
    PostgreSQL's SQLSTATE): enough to tell a lock from a constraint, and never any data."""
    kind = type(error).__name__
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlite_errorname", None) or getattr(original, "sqlstate", None)
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 40:
        kind += f" ({code})"
    return kind
