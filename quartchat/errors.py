"""One vocabulary of errors: `APIError` is raised anywhere and rendered in one place."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import sqlite3
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import sqlalchemy.exc
from quart import Quart, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException

from .adapters import quart as quart_adapter

log = logging.getLogger("quartchat")


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """A code of the vocabulary: the HTTP statuses it is answered with, whether it also ends a
    stream that has begun (an SSE `error` event), and what it means, in one line."""

    statuses: tuple[int, ...]
    meaning: str
    event: bool = False


# Every code quartchat sends, one entry each; docs/api.md's table is generated from this
# (scripts/error-table), and tests/test_errors_vocabulary.py fails on a code raised but missing.
CODES: dict[str, ErrorCode] = {
    "INVALID_REQUEST": ErrorCode(
        (400,),
        "invalid JSON, a body that fails validation (with `details`), a bad cursor or parameter",
    ),
    "HOST_NOT_ALLOWED": ErrorCode((400,), "`Host` is not a loopback name or in `ALLOWED_HOSTS`"),
    "CROSS_SITE_REQUEST": ErrorCode((403,), "a state-changing request from another site"),
    "UNSUPPORTED_MEDIA_TYPE": ErrorCode((415,), "a `POST` whose body is not `application/json`"),
    "REQUEST_TOO_LARGE": ErrorCode(
        (413,),
        "a body over `MAX_BODY_BYTES`; an import over `IMPORT_MAX_BYTES` (the message names the bound)",
    ),
    "IMPORT_QUOTA_EXCEEDED": ErrorCode(
        (429,),
        "imports over `IMPORT_BYTES_PER_DAY` for the user in a day (`Retry-After`: until the day's window ends)",
    ),
    "DATABASE_BUSY": ErrorCode(
        (503,),
        "SQLite's write lock held past the busy timeout, PostgreSQL out of connections or a lock "
        "(55P03, 53300), no pooled connection in time (`Retry-After: 1`)",
    ),
    "NOT_FOUND": ErrorCode(
        (404,),
        "an unknown route; no such thing, or another user's (conversation, session, token...)",
    ),
    "METHOD_NOT_ALLOWED": ErrorCode(
        (405,), "a method the route does not take (`Allow` lists those it does)"
    ),
    "NOT_CONFIGURED": ErrorCode((503,), "no upstream key while the base URL is OpenAI's own"),
    "UPSTREAM_AUTH": ErrorCode(
        (502,),
        "the upstream answered 401/403: it refused our key (the message only says to tell the "
        "administrator; the upstream's own is logged and on the admin page)",
    ),
    "UPSTREAM_RATE_LIMITED": ErrorCode(
        (429,),
        "the upstream answered 429 (its `Retry-After` passed on, if seconds or an HTTP date)",
    ),
    "UPSTREAM_REJECTED": ErrorCode(
        (400,),
        "the upstream answered another 4xx (its message, secrets removed, 300 characters at most)",
    ),
    "UPSTREAM_ERROR": ErrorCode(
        (502,),
        "upstream 5xx or 2xx without a completion; mid-stream: its error, a bad chunk, a cut",
        event=True,
    ),
    "UPSTREAM_UNREACHABLE": ErrorCode((502,), "no connection to the upstream"),
    "UPSTREAM_TIMEOUT": ErrorCode(
        (504,),
        "no connection or first byte in `REQUEST_TIMEOUT_SECONDS`; mid-stream: silent that long",
        event=True,
    ),
    "INTERNAL_ERROR": ErrorCode(
        (500,), "a bug: no traceback, its type is logged (once, with the request id)", event=True
    ),
    "SERVER_SHUTTING_DOWN": ErrorCode(
        (503,),
        "a new chat after SIGTERM; mid-stream: still running when the grace period ended",
        event=True,
    ),
    "SERVER_BUSY": ErrorCode(
        (503,),
        "`SERVER=uvicorn`: every connection a worker may hold is busy (Retry-After); the "
        "connection is closed",
    ),
    "UNAUTHENTICATED": ErrorCode(
        (401,),
        "no session or API token (accounts on), or one that ended or expired "
        "(`WWW-Authenticate: Bearer`)",
    ),
    "FORBIDDEN": ErrorCode((403,), "not an administrator, on an admin route"),
    "SESSION_REQUIRED": ErrorCode(
        (403,), "making an API token with a token or through a proxy's trusted header"
    ),
    "PASSWORD_REQUIRED": ErrorCode(
        (403,), "making an API token without the password, in a session older than 10 minutes"
    ),
    "ACCOUNT_NOT_ACTIVE": ErrorCode((403,), "a trusted-header user not (yet) allowed in"),
    "INVALID_IDENTITY_HEADER": ErrorCode(
        (403,),
        "a trusted header whose value is not an email (or does not match "
        "`AUTH_TRUSTED_HEADER_PATTERN`); nothing is created",
    ),
    "INVALID_CREDENTIALS": ErrorCode(
        (401,),
        "login: wrong email or password (one message for both); a wrong password to change it "
        "or make a token",
    ),
    "TOO_MANY_ATTEMPTS": ErrorCode(
        (429,),
        "login, password change, new token: 10 attempts a minute for the account, the address "
        "or the known browser; setup or invite acceptance: 10 a minute from the address "
        "(`Retry-After`)",
    ),
    "ACCOUNT_PENDING": ErrorCode(
        (403,), "login: the account waits for an administrator's approval"
    ),
    "ACCOUNT_DISABLED": ErrorCode((403,), "login: the account was disabled"),
    "WEAK_PASSWORD": ErrorCode((400,), "a password under 8 characters"),
    "SETUP_REFUSED": ErrorCode((403,), "the setup token is wrong or used, or an admin exists"),
    "SIGNUP_CLOSED": ErrorCode((403,), "sign-up under the `closed` or `invite` policy"),
    "SETUP_PENDING": ErrorCode(
        (403,), "sign-up (or a new trusted-header user) before the first admin exists"
    ),
    "EMAIL_TAKEN": ErrorCode((409,), "an email that has an account already"),
    "INVALID_INVITE": ErrorCode((404,), "an invite used, expired or withdrawn"),
    "LAST_ADMIN": ErrorCode((409,), "disabling or demoting the last active administrator"),
    "TOO_MANY_TOKENS": ErrorCode(
        (409,), "a new API token while the user has the most there may be (50)"
    ),
    "TOO_MANY_STREAMS": ErrorCode(
        (429,), "the user holds `MAX_STREAMS_PER_USER` upstream requests already (`Retry-After`)"
    ),
    "MODEL_NOT_ALLOWED": ErrorCode(
        (400,),
        "a model no upstream offers (its allow-list, `MODELS_ALLOWED`, its `/models`; the message "
        "says when a list could not be fetched), or one the user's policy does not allow "
        "(404 `model_not_found` on /v1)",
    ),
    "RATE_LIMITED": ErrorCode(
        (429,),
        "over the user's requests per minute, tokens per day or cost per month (the message "
        'names the limit, `details` `[{"limit": "tokens_per_day"}]` and so on; '
        "`Retry-After`: until its window frees; on /v1 OpenAI's type `requests` or `tokens`)",
    ),
    "REPLY_TOO_LONG": ErrorCode(
        (504,),
        "a reply running longer than `MAX_REPLY_SECONDS` (a whole chat: 504; a stream: its end)",
        event=True,
    ),
    "CREDENTIAL_REVOKED": ErrorCode(
        (401,),
        "mid-stream: the user was disabled or logged out, or the API token revoked or expired",
        event=True,
    ),
    "STALE": ErrorCode(
        (409,),
        "a change against a `revision` the conversation moved past (`details`: the current one)",
    ),
    "REPLY_STOPPED": ErrorCode(
        (409,),
        "mid-stream: the reply was stopped (`POST …/stop`); its text so far is saved as `stopped`",
        event=True,
    ),
    "REPLY_INTERRUPTED": ErrorCode(
        (503,),
        "mid-stream: the process running the reply went away; its text so far is saved",
        event=True,
    ),
    "TURN_CONFLICT": ErrorCode(
        (409,),
        "a turn while a reply of the conversation runs (`details`: its `reply_id`), or a resent "
        "turn (same `client_id`) with no reply; mid-stream: its reply did not complete",
        event=True,
    ),
}

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
        upstream_error: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.upstream_status = upstream_status
        # The upstream's own OpenAI error object (redacted), for /v1 to answer as it did.
        self.upstream_error = upstream_error

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
    """The error as this request's dialect says: OpenAI's under /v1, ours everywhere else."""
    if has_request_context() and request.path.startswith(V1_PREFIX):
        status, payload = openai_error(error)
    else:
        status, payload = error.status_code, error.payload(current_request_id())
    response = Response(orjson.dumps(payload), status=status, content_type="application/json")
    response.headers.update(error.headers)
    return response


V1_PREFIX = "/v1/"

# /v1 speaks OpenAI's error dialect, so that its SDKs raise their usual exceptions: per code,
# the status, `type` and `code` OpenAI itself would answer with (other codes keep their status,
# their type by status below, and our code).
OPENAI_ERRORS: dict[str, tuple[int, str, str | None]] = {
    "UNAUTHENTICATED": (401, "invalid_request_error", "invalid_api_key"),
    "CREDENTIAL_REVOKED": (401, "invalid_request_error", "invalid_api_key"),
    "MODEL_NOT_ALLOWED": (404, "invalid_request_error", "model_not_found"),
    "TOO_MANY_STREAMS": (429, "requests", "rate_limit_exceeded"),
    "RATE_LIMITED": (429, "requests", "rate_limit_exceeded"),
    "UPSTREAM_RATE_LIMITED": (429, "requests", "rate_limit_exceeded"),
    "INVALID_REQUEST": (400, "invalid_request_error", None),
    "NOT_FOUND": (404, "invalid_request_error", None),
    "METHOD_NOT_ALLOWED": (405, "invalid_request_error", None),
}


def openai_type(status: int) -> str:
    """OpenAI's error `type` for a status it has no more specific one for."""
    if status >= 500:
        return "server_error"
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    return "invalid_request_error"


def openai_error(error: APIError) -> tuple[int, dict[str, Any]]:
    """`error` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, and its
    status. An upstream's own 4xx (not 401/403: those say our key failed, never the user's) is
    answered with its status and error object, so a context-length error reads as OpenAI's."""
    if error.upstream_error is not None and error.upstream_status is not None:
        return error.upstream_status, {"error": error.upstream_error}
    status, kind, code = OPENAI_ERRORS.get(
        error.code, (error.status_code, openai_type(error.status_code), error.code)
    )
    param = None
    if error.details:
        loc = error.details[0].get("loc")
        param = loc if isinstance(loc, str) and loc != "body" else None
        if error.details[0].get("limit") in ("tokens_per_day", "cost_per_month"):
            kind = "tokens"  # OpenAI's type for a budget of tokens, not of requests
    body = {"message": error.message, "type": kind, "param": param, "code": code}
    return status, {"error": body}


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
        await asyncio.wait_for(quart_adapter.body_complete(request.body).wait(), DISCARD_SECONDS)


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
            limit = request.max_content_length  # the request's own: an import's is larger
            message = f"The request body is larger than the {limit} byte limit."
            await _discard_rest_of_body()
        response = error_response(APIError(status, code, message))
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        if database_busy(error):
            log.warning("%s in request %s", error_kind(error), current_request_id())
            return error_response(
                APIError(
                    503,
                    "DATABASE_BUSY",
                    "The database is busy: try again in a moment.",
                    headers={"Retry-After": str(BUSY_RETRY_AFTER)},
                )
            )
        # Log the type only: exception text can carry request data or upstream secrets.
        log.error("unhandled %s in request %s", error_kind(error), current_request_id())
        return error_response(APIError(500, "INTERNAL_ERROR", "An unexpected error occurred."))


BUSY_RETRY_AFTER = 1  # seconds
# PostgreSQL: lock_not_available (a lock or statement timeout), too_many_connections.
BUSY_SQLSTATES = frozenset({"55P03", "53300"})


def database_busy(error: BaseException) -> bool:
    """Whether `error` means the database is busy rather than broken: SQLite's write lock held
    past the busy timeout (SQLITE_BUSY, "database is locked"), PostgreSQL out of connections or
    a lock, or no pooled connection free in time. Looks through SQLAlchemy's wrapper (`orig`)
    and the exception's causes; the writer thread raises the drivers' own errors unwrapped."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.TimeoutError):  # the pool's wait
            return True
        name = getattr(seen, "sqlite_errorname", None)
        if isinstance(name, str) and name.startswith("SQLITE_BUSY"):
            return True
        if isinstance(seen, sqlite3.OperationalError) and "database is locked" in str(seen):
            return True
        if getattr(seen, "sqlstate", None) in BUSY_SQLSTATES:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def error_kind(error: Exception) -> str:
    """The exception's type; for a database error also the driver's error code (SQLITE_BUSY,
    PostgreSQL's SQLSTATE): enough to tell a lock from a constraint, and never any data."""
    kind = type(error).__name__
    original = getattr(error, "orig", None)
    code = getattr(original, "sqlite_errorname", None) or getattr(original, "sqlstate", None)
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 40:
        kind += f" ({code})"
    return kind


ERROR_TABLE_START = (
    "<!-- error table: generated from quartchat/errors.py's CODES by scripts/error-table -->"
)
ERROR_TABLE_END = "<!-- end of the error table -->"


def error_table() -> str:
    """The Markdown table of `CODES`, as docs/api.md shows it."""
    rows = ["| code | status | meaning |", "|---|---|---|"]
    for code, error in CODES.items():
        status = " / ".join(str(s) for s in error.statuses)
        if error.event:
            status += ", `error` event"
        rows.append(f"| `{code}` | {status} | {error.meaning} |")
    return "\n".join(rows) + "\n"


def with_error_table(document: str) -> str:
    """`document` with the text between the error table's markers replaced by `error_table()`."""
    start = document.index(ERROR_TABLE_START) + len(ERROR_TABLE_START)
    end = document.index(ERROR_TABLE_END, start)
    return document[:start] + "\n" + error_table() + document[end:]
