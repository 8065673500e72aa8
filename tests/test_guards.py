"""The checks every request passes: host, cross-site origin, JSON bodies, no CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import respx
from quart.typing import TestClientProtocol as Client

from quartchat import create_app
from quartchat.guards import HostCheck, host_name

from .conftest import CHAT, assert_error, make_settings
from .test_api import COMPLETION

ENDPOINTS = ["/api/chat", "/api/chat/stream"]


@pytest.fixture
def completion(upstream: respx.MockRouter) -> respx.Route:
    """The upstream answers, if anything gets through; `assert_all_called` is off per test."""
    upstream._assert_all_called = False  # a refused request must not reach it
    return upstream.post("/chat/completions").respond(json=COMPLETION)


async def post(client: Client, path: str = "/api/chat", **headers: str) -> tuple[int, str | bytes]:
    headers.setdefault("Content-Type", "application/json")
    response = await client.post(path, data=orjson.dumps(CHAT), headers=headers)
    return response.status_code, await response.get_data()


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
async def test_a_body_that_is_not_json_is_refused_before_the_upstream_is_called(
    client: Client, completion: respx.Route, path: str, content_type: str
) -> None:
    status, body = await post(client, path, **{"Content-Type": content_type})
    assert_error(status, body, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert not completion.called


async def test_json_with_a_charset_is_json(client: Client, completion: respx.Route) -> None:
    status, _ = await post(client, **{"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_cross_site_browser_request_is_refused(
    client: Client, completion: respx.Route, path: str, site: str
) -> None:
    status, body = await post(client, path, **{"Sec-Fetch-Site": site})
    assert_error(status, body, 403, "CROSS_SITE_REQUEST")
    assert not completion.called


@pytest.mark.parametrize("site", ["same-origin", "none"])
async def test_a_same_origin_or_user_initiated_request_passes(
    client: Client, completion: respx.Route, site: str
) -> None:
    status, _ = await post(client, **{"Sec-Fetch-Site": site, "Origin": "http://elsewhere"})
    assert status == 200


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost:9999", "null", "http://localhost.evil"]
)
async def test_without_fetch_metadata_a_foreign_origin_is_refused(
    client: Client, completion: respx.Route, origin: str
) -> None:
    status, body = await post(client, Origin=origin, Host="localhost")
    assert_error(status, body, 403, "CROSS_SITE_REQUEST")
    assert not completion.called


async def test_without_fetch_metadata_the_service_s_own_origin_passes(
    client: Client, completion: respx.Route
) -> None:
    status, _ = await post(client, Origin="http://localhost:8333", Host="localhost:8333")
    assert status == 200


async def test_a_script_without_origin_headers_passes(
    client: Client, completion: respx.Route
) -> None:
    status, _ = await post(client)
    assert status == 200


async def test_reads_are_not_subject_to_the_cross_site_rule(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(json={"data": []})
    response = await client.get("/api/models", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


async def test_no_cors_headers_are_ever_sent(client: Client, completion: respx.Route) -> None:
    evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = await client.options("/api/chat", headers=evil)
    response = await client.post("/api/chat", json=CHAT)
    for answer in (preflight, response):
        assert not [k for k, _ in answer.headers.items() if k.lower().startswith("access-control-")]


@pytest.fixture
async def guarded(upstream: respx.MockRouter) -> AsyncIterator[Client]:
    upstream.get("/models").respond(json={"data": []})
    upstream._assert_all_called = False
    settings = make_settings(allowed_hosts="chat.example.com, .team.example")
    app = create_app(settings, transport=httpx.MockTransport(upstream.async_handler))
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.mark.parametrize(
    "host",
    [
        "chat.example.com",
        "CHAT.example.com:8333",
        "team.example",
        "a.b.team.example",
        "localhost:8333",
        "127.0.0.1",
        "[::1]:8333",
    ],
)
async def test_allowed_hosts_and_loopback_names_are_answered(guarded: Client, host: str) -> None:
    response = await guarded.get("/api/models", headers={"Host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "chat.example.com.evil", "xteam.example", "192.168.1.5:8333", ""]
)
async def test_any_other_host_is_refused_so_dns_rebinding_gets_nothing(
    guarded: Client, host: str
) -> None:
    for path in ("/api/models", "/", "/health"):
        response = await guarded.get(path, headers={"Host": host})
        assert_error(response.status_code, await response.get_data(), 400, "HOST_NOT_ALLOWED")


def test_without_allowed_hosts_any_host_is_answered() -> None:
    check = HostCheck([])
    assert check("anything.example:8333") and check("10.0.0.3")


def test_without_accounts_and_allowed_hosts_only_loopback_names_are_answered() -> None:
    check = HostCheck([], loopback_default=True)
    assert check("localhost:8333") and check("127.0.0.1") and check("[::1]:8333")
    assert not check("anything.example") and not check("10.0.0.3:8333")
    assert HostCheck(["chat.lan"], loopback_default=True)("chat.lan")


async def test_without_accounts_a_rebound_host_name_gets_nothing(client: Client) -> None:
    response = await client.get("/", headers={"Host": "attacker.example"})
    assert_error(response.status_code, await response.get_data(), 400, "HOST_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.com:8333", "example.com"),
        ("[::1]:80", "[::1]"),
        ("::1", "::1"),
        ("a", "a"),
        ("[::1", "[::1"),
    ],
)
def test_the_host_name_is_the_header_without_its_port(header: str, name: str) -> None:
    assert host_name(header) == name
