"""An httpx transport on aiohttp's connection pool.

httpx stays the API (and respx can stand in for the transport in tests), but httpx's default
transport spends most of its CPU on connection-pool bookkeeping that grows with the number of
pooled connections (httpcore PR #1035) -- the dominant cost of a relay holding hundreds of
streams. aiohttp's pool does not. This is the idea of the `httpx-aiohttp` package, owned here
for two reasons: its exception map turns every connection failure into `ConnectTimeout`, and
its body iterator cannot be waited on with a timeout without being destroyed, which the relay
needs to send keep-alive pings while an upstream is silent (`read_chunk()` is cancel-safe).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except TimeoutError as exc:  # aiohttp's ServerTimeoutError / SocketTimeoutError are these
        raise httpx.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc


class AiohttpStream(httpx.AsyncByteStream):
    """A response body read straight from aiohttp's buffer."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def read_chunk(self) -> bytes:
        """Whatever bytes have arrived (b"" at the end). Cancelling the wait loses nothing."""
        with _httpx_errors(self._request):
            return await self._response.content.readany()

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

    def _get_session(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session binds to the running event loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=True
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        with _httpx_errors(request):
            response = await self._get_session().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                compress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=AiohttpStream(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
