"""The default model: OPENAI_MODEL when set (warned about at start, and on the admin page, when the
upstream does not list it); unset, the first model the upstream lists, which requests that name
no model are then sent with."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import URL

from quartchat import create_app

from ..auth.conftest import accounts_settings, log_in, make_user
from ..conftest import CHAT, LiveClient, make_settings, parse_events
from ..fake_upstream import FakeUpstream

COMPLETION = {
    "id": "c",
    "model": "m",
    "created": 1,
    "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}],
}

Started = Callable[..., AbstractAsyncContextManager[Quart]]


def lists(upstream: respx.MockRouter, *ids: str) -> respx.Route:
    return upstream.get("/models").respond(json={"data": [{"id": i} for i in ids]})


def completions(upstream: respx.MockRouter) -> respx.Route:
    return upstream.post("/chat/completions").respond(json=COMPLETION)


def sent_model(route: respx.Route) -> str:
    return str(orjson.loads(route.calls.last.request.content)["model"])


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "quartchat" and r.levelno == level and text in r.getMessage()
    ]


@pytest.fixture
def started(upstream: respx.MockRouter) -> Started:
    """`async with started(**settings) as app`: the app on respx, its start-up check done."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Quart]:
        app = create_app(
            make_settings(**overrides),
            transport=httpx.MockTransport(upstream.async_handler),
            check_upstream=True,
        )
        async with app.test_app():
            await app.extensions["upstream_check"]
            yield app

    return start


async def test_without_openai_model_the_default_is_the_first_model_the_upstream_lists(
    live: LiveClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "quartchat")
    fake.models = ["gemma-3-270m"]  # a llama.cpp server with one small model
    async with live(openai_model=None) as client:
        offered = await (await client.get("/api/models")).get_json()
        streamed = await client.post("/api/chat/stream", json=CHAT)
        whole = await client.post("/api/chat", json=CHAT)
    assert offered == {
        "default": "gemma-3-270m",
        "models": ["gemma-3-270m"],
        "any_model": True,
        "warnings": [],
        "prices": {},
    }
    assert parse_events(await streamed.get_data())[-1][0] == "done"
    assert whole.status_code == 200
    assert [r.json["model"] for r in fake.chat_requests()] == ["gemma-3-270m"] * 2
    assert logged(
        caplog, logging.INFO, "OPENAI_MODEL is not set: the default model is gemma-3-270m"
    )


async def test_the_default_is_the_first_in_the_upstreams_order(
    started: Started, upstream: respx.MockRouter
) -> None:
    lists(upstream, "zeta", "alpha")
    route = completions(upstream)
    async with started(openai_model=None) as app:
        client = app.test_client()
        offered = await (await client.get("/api/models")).get_json()
        await client.post("/api/chat", json=CHAT)
    assert (offered["default"], offered["models"]) == ("zeta", ["zeta", "alpha"])
    assert sent_model(route) == "zeta"


async def test_without_openai_model_a_listed_built_in_default_stays_the_default(
    started: Started, upstream: respx.MockRouter
) -> None:
    lists(upstream, "dall-e-2", "whisper-1", "gpt-4o-mini")  # OpenAI's order is no preference
    route = completions(upstream)
    async with started(openai_model=None) as app:
        await app.test_client().post("/api/chat", json=CHAT)
    assert sent_model(route) == "gpt-4o-mini"


async def test_without_openai_model_the_default_is_one_models_allowed_names(
    started: Started, upstream: respx.MockRouter
) -> None:
    lists(upstream, "gamma", "beta")
    route = completions(upstream)
    async with started(openai_model=None, models_allowed="alpha, beta") as app:
        client = app.test_client()
        offered = await (await client.get("/api/models")).get_json()
        await client.post("/api/chat", json=CHAT)
    assert (offered["default"], offered["models"]) == ("beta", ["beta", "alpha"])
    assert sent_model(route) == "beta"


async def test_a_set_openai_model_the_upstream_does_not_list_is_used_and_warned_about_at_start(
    started: Started, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    lists(upstream, "gemma-3-270m")
    route = completions(upstream)
    async with started(openai_model="gpt-4o-mini") as app:
        warned = logged(caplog, logging.WARNING, "OPENAI_MODEL=gpt-4o-mini is not among")
        assert len(warned) == 1
        await app.test_client().post("/api/chat", json=CHAT)
    assert sent_model(route) == "gpt-4o-mini"


async def test_an_upstream_down_at_start_is_a_warning_and_the_service_still_serves(
    started: Started, upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.get("/models").mock(side_effect=httpx.ConnectError("refused"))
    async with started(openai_model=None) as app:
        assert logged(caplog, logging.WARNING, "could not read the upstream's list of models")
        offered = await (await app.test_client().get("/api/models")).get_json()
    assert offered["default"] == "gpt-4o-mini"  # the built-in one, until a list can be read


@pytest.mark.parametrize(("allowed", "any_model"), [("", False), ("alpha", False), ("*", True)])
async def test_any_model_is_true_only_when_models_allowed_is_a_star(
    client: Client, upstream: respx.MockRouter, allowed: str, any_model: bool
) -> None:
    upstream._assert_all_called = False  # a named allow-list needs no list from the upstream
    lists(upstream, "alpha")
    app = create_app(
        make_settings(models_allowed=allowed),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app() as test_app:
        offered = await (await test_app.test_client().get("/api/models")).get_json()
    assert offered["any_model"] is any_model


# -- the admin page ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("openai_model", "status", "models"),
    [
        (
            "gpt-4o-mini",
            {
                "default_model": "gpt-4o-mini",
                "default_source": "OPENAI_MODEL",
                "default_listed": False,
            },
            2,  # the one it lists, and OPENAI_MODEL's, offered all the same
        ),
        (
            None,
            {"default_model": "gemma-3-270m", "default_source": "upstream", "default_listed": True},
            1,
        ),
    ],
)
async def test_the_admin_page_says_which_default_is_used_and_whether_it_is_listed(
    database: URL,
    tmp_path: Path,
    upstream: respx.MockRouter,
    openai_model: str | None,
    status: dict[str, Any],
    models: int,
) -> None:
    lists(upstream, "gemma-3-270m")
    app = create_app(
        accounts_settings(database, tmp_path, openai_model=openai_model),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app():
        await make_user(app, "boss@example.com", role="admin")
        admin = app.test_client()
        await log_in(admin, "boss@example.com")
        shown = await (await admin.get("/api/admin/upstream")).get_json()
    the_upstream = {
        "name": "default",
        "default": True,
        "up": True,
        "models": models,
        "last_auth_failure": None,
    }
    assert shown == {
        **status,
        "models_fetched": True,
        "last_auth_failure": None,
        "upstreams": [the_upstream],
    }
