"""An httpx transport on aiohttp's connection pool.

httpx stays the API (and respx can stand in for the transport in tests), but httpx's default
transport spends most of its CPU on connection-pool bookkeeping that grows with the number of
pooled connections (httpcore PR #1035) -- the dominant cost of a relay holding hundreds of
streams. aiohttp's pool does not. This is the idea of the `httpx-aiohttp` package, owned here
for two reasons: its exception map turns every connection failure into `ConnectTimeout`, and
its body iterator cannot be waited on with a timeout without being destroyed, which the relay
needs to send keep-alive pings while an upstream is silent (`read_chunk()` is cancel-safe).

The session keeps no cookies (`DummyCookieJar`): it is shared by every user of the process.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx

from ..adapters import aiohttp as aiohttp_adapter


def _httpx_error(exc: Exception, request: httpx.Request | None) -> Exception:
    """The httpx exception a caller of an httpx transport expects for an aiohttp failure."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError / SocketTimeoutError are these
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return httpx.ReadError(message, request=request)
    return exc


STREAM_EXTENSION = "quartchat.aiohttp_stream"


class AiohttpStream(httpx.AsyncByteStream):
    """A response body read straight from aiohttp's buffer."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request | None) -> None:
        self._response = response
        self._request = request

    async def read_chunk(self) -> bytes:
        """Whatever bytes have arrived (b"" at the end). Cancelling the wait loses nothing."""
        # try/except rather than a context manager: this runs once per relayed chunk.
        try:
            return await self._response.content.readany()
        except Exception as exc:
            raise _httpx_error(exc, self._request) from exc

    def stop_read_timeout(self) -> None:
        """No more `sock_read` timeout for this response: its reader times idle gaps itself."""
        aiohttp_adapter.stop_read_timeout(self._response)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    async def aclose(self) -> None:
        # A body read to the end returns its connection to the pool; anything else closes the
        # socket, which is how an upstream learns to stop generating.
        if self._response.content.is_eof():
            self._response.release()
        else:
            self._response.close()


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Answer:
    """An upstream's answer to a POST, as `UpstreamClient` reads it: its status and headers, and
    either its whole body (a whole answer, or a refusal) or the stream of a body still to come."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes = b""
    stream: AiohttpStream | None = None
    close: Callable[[], Awaitable[None]] = _nothing

    @property
    def reason(self) -> str:
        """The status's reason phrase (what httpx's `Response.reason_phrase` says)."""
        return httpx.codes.get_reason_phrase(self.status)


class Target(NamedTuple):
    """Where a client's requests to one URL go and with what, worked out once
    (`AiohttpTransport.target`)."""

    url: str
    headers: list[tuple[str, str]]
    proxy: str | None
    timeout: aiohttp.ClientTimeout


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = 1000,
        keepalive_expiry: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl: ssl.SSLContext | bool = (
            httpx.create_ssl_context(verify=verify) if verify is True else verify
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session binds to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
            )
            # No cookie jar: one session serves every user, and a jar would replay one user's
            # upstream `Set-Cookie` on the next user's request.
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    def _proxy_for(self, url: httpx.URL) -> str | None:
        # HTTP(S)_PROXY / NO_PROXY, looked up once per host: aiohttp's `trust_env` redoes it for
        # every request, in a thread (it stats ~/.netrc), which was a tenth of a request's CPU.
        key = (url.scheme, url.host)
        if key not in self._proxies:
            self._proxies[key] = None if proxy_bypass(url.host) else getproxies().get(url.scheme)
        return self._proxies[key]

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"))
        if key not in self._timeouts:
            self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=key[0], sock_connect=key[1], sock_read=key[2]
            )
        return self._timeouts[key]

    def target(
        self, url: httpx.URL, headers: httpx.Headers, timeout: dict[str, float | None]
    ) -> Target:
        """What `post` needs to send requests to `url` with `headers`: for a client that sends
        many (the completions), worked out once instead of by an `httpx.Request` every time."""
        return Target(
            _aiohttp_url(url, headers),
            headers.multi_items(),
            self._proxy_for(url),
            self._timeout(timeout),
        )

    async def post(self, target: Target, content: bytes, *, whole: bool) -> Answer:
        """POST `content` to `target`: the answer with its whole body when `whole` or refused
        (a status of 400 or more), else with its body's stream. A transport failure raises the
        httpx exception `handle_async_request` would; so does a whole body that cannot be read,
        while a refusal's unreadable body is b"" (its status says enough)."""
        response = await self._send("POST", target, content)
        if whole or response.status >= 400:
            try:
                body = await response.read()
            except Exception as exc:
                if whole:
                    raise _httpx_error(exc, None) from exc
                body = b""
            finally:
                # Read to the end, the connection goes back to the pool; else it is closed.
                if response.content.is_eof():
                    response.release()
                else:
                    response.close()
            return Answer(response.status, response.headers, body)
        stream = AiohttpStream(response, None)
        return Answer(response.status, response.headers, stream=stream, close=stream.aclose)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        target = self.target(request.url, request.headers, timeout)
        response = await self._send(request.method, target, request.content or None, request)
        stream = AiohttpStream(response, request)
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=stream,
            request=request,
            # httpx.AsyncClient wraps `stream`; the extension is how callers reach `read_chunk()`.
            extensions={"http_version": b"HTTP/1.1", STREAM_EXTENSION: stream},
        )

    async def _send(
        self,
        method: str,
        target: Target,
        content: bytes | None,
        request: httpx.Request | None = None,
    ) -> aiohttp.ClientResponse:
        """The one aiohttp request every call makes; a failure raises the httpx exception a
        caller of an httpx transport expects (naming `request` when there is one)."""
        try:
            return await self._get_session().request(
                method,
                target.url,
                headers=target.headers,
                data=content,
                allow_redirects=False,
                compress=False,
                proxy=target.proxy,
                timeout=target.timeout,
            )
        except Exception as exc:
            raise _httpx_error(exc, request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _aiohttp_url(url: httpx.URL, headers: httpx.Headers) -> str:
    if url.userinfo and "authorization" in headers:
        # A base URL with a user and password: httpx made them an Authorization header
        # already (or the upstream's key is one), and aiohttp refuses credentials twice.
        url = url.copy_with(userinfo=b"")
    return str(url)
