from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from quartchat.upstream.transport import STREAM_EXTENSION, AiohttpStream, AiohttpTransport

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import free_port


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=AiohttpTransport(max_connections=10), timeout=1
    ) as client:
        yield client


async def open_body(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, AiohttpStream]:
    """POST and return the open response with the transport's own body stream."""
    response = await http.send(http.build_request("POST", url, json={}), stream=True)
    stream = response.extensions[STREAM_EXTENSION]
    assert isinstance(stream, AiohttpStream)
    return response, stream


async def test_refused_connection_is_connect_error_not_a_timeout(http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_silent_server_is_a_read_timeout(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=[], hang=True))
    with pytest.raises(httpx.ReadTimeout):
        await http.post(fake.url + "/chat/completions", json={})


async def test_connection_cut_mid_body_is_a_read_error(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[b"data: {}\n\n"], cut=True))
    with pytest.raises(httpx.ReadError):
        await http.post(fake.url + "/chat/completions", json={})


async def test_a_finished_body_keeps_its_connection_for_the_next_request(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    for _ in range(3):
        response = await http.post(
            fake.url + "/chat/completions", json={"stream": True, "messages": []}
        )
        assert response.status_code == 200
    assert fake.open_connections == 1
    assert fake.disconnects == []


async def test_closing_an_unfinished_body_closes_the_socket(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["a"])[:2], hang=True))
    response, stream = await open_body(http, fake.url + "/chat/completions")
    assert await stream.read_chunk()
    await response.aclose()
    assert await asyncio.to_thread(fake.wait_for_disconnect, 2) is not None


async def test_an_abandoned_read_loses_no_bytes(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=[b"first", b"second"], delay=0.3))
    response, stream = await open_body(http, fake.url + "/x/chat/completions")
    received = await stream.read_chunk()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # what a keep-alive ping does to a pending read
            await stream.read_chunk()
    while chunk := await stream.read_chunk():
        received += chunk
    assert received == b"firstsecond"
    await response.aclose()


async def test_http_proxy_from_the_environment_is_used_and_no_proxy_respected(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake upstream plays the proxy: a proxied request arrives with the absolute URL.
    monkeypatch.setenv("HTTP_PROXY", fake.url.removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=2) as client:
        proxied = await client.post("http://api.example.invalid/v1/chat/completions", json={})
        assert proxied.status_code == 200
        assert fake.chat_requests()[-1].path == "http://api.example.invalid/v1/chat/completions"
        with pytest.raises(httpx.ConnectError):  # bypassed: a direct lookup of a .invalid host
            await client.post("http://direct.invalid/v1/chat/completions", json={})


async def test_stop_read_timeout_lifts_it_for_this_response_only(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    # `http` has a 1 s read timeout; this reply pauses 1.5 s between its two pieces.
    fake.reply_with(Reply(chunks=[b"first", b"second"], delay=1.5))
    response, stream = await open_body(http, fake.url + "/chat/completions")
    received = await stream.read_chunk()
    stream.stop_read_timeout()
    while chunk := await stream.read_chunk():
        received += chunk
    assert received == b"firstsecond"
    await response.aclose()
    # The next request on the same pooled connection has its timeout again.
    fake.reply_with(Reply(chunks=[], hang=True))
    with pytest.raises(httpx.ReadTimeout):
        await http.post(fake.url + "/chat/completions", json={})
    assert fake.open_connections == 1


async def test_a_cookie_the_upstream_sets_is_not_sent_on_the_next_request(
    fake: FakeUpstream,
) -> None:
    # One transport serves every user: a cookie jar would hand one user's upstream session to
    # the next user's request. (Requests built as UpstreamClient builds them: httpx's own jar,
    # merged in only by `build_request`, is not in play.) A host name, not an address: aiohttp's
    # jar ignores cookies from IP addresses, but upstreams have names.
    url = fake.url.replace("127.0.0.1", "localhost") + "/chat/completions"
    fake.reply_with(
        Reply(
            chunks=[b"{}"],
            headers={"Content-Type": "application/json", "Set-Cookie": "session=alice; Path=/"},
        )
    )
    transport = AiohttpTransport(max_connections=10)
    offered = []
    try:
        for _ in range(2):
            request = httpx.Request("POST", url, json={})
            response = await transport.handle_async_request(request)
            await response.aread()
            await response.aclose()
            offered.append(response.headers.get("set-cookie"))
    finally:
        await transport.aclose()
    assert offered == ["session=alice; Path=/", None]
    assert [r.headers.get("cookie") for r in fake.chat_requests()] == [None, None]


async def test_a_url_with_a_user_and_password_sends_them_once_as_basic_auth(
    http: httpx.AsyncClient, fake: FakeUpstream
) -> None:
    # httpx turns the URL's credentials into an Authorization header, and aiohttp refused to be
    # given them twice (a ValueError: a base URL behind a password-protected proxy never worked).
    url = fake.url.replace("http://", "http://user:secret@") + "/models"
    response = await http.get(url)
    assert response.status_code == 200
    basic = "Basic " + base64.b64encode(b"user:secret").decode()
    assert fake.requests[-1].headers["authorization"] == basic
