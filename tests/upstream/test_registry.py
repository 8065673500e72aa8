"""Several upstreams: routing by model name, the union the picker offers, an upstream that is down.

Two fake upstreams on real sockets: `fake` is the environment's (OPENAI_API_BASE, named
"default"), `second` is the file's "second".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from quartchat import create_app
from quartchat.errors import APIError
from quartchat.upstream.config import load
from quartchat.upstream.registry import Registry, down_warning
from quartchat.usage.meter import Price

from ..conftest import CHAT, assert_error, make_settings, parse_events, texts
from ..fake_upstream import FakeUpstream

Start = Callable[..., AbstractAsyncContextManager[Client]]


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream() as second:
        second.models = ["llama3.2:3b", "qwen3:4b", "shared"]
        yield second


@pytest.fixture
def start(fake: FakeUpstream, second: FakeUpstream, tmp_path: Path) -> Start:
    """The app in front of both fakes, `fake` allowing what it lists (MODELS_ALLOWED empty), the
    file's `second` upstream with `extra` TOML lines, as `async with start(extra) as client`."""

    @asynccontextmanager
    async def run(extra: str = "", **overrides: Any) -> AsyncIterator[Client]:
        path = tmp_path / "upstreams.toml"
        path.write_text(f'[[upstreams]]\nname = "second"\nbase_url = "{second.url}"\n{extra}\n')
        values: dict[str, Any] = {"models_allowed": [], **overrides}
        settings = make_settings(openai_api_base=fake.url, upstreams_file=path, **values)
        app = create_app(settings)
        async with app.test_app() as test_app:
            yield test_app.test_client()

    return run


def chat(model: str) -> dict[str, Any]:
    return {**CHAT, "model": model}


async def models(client: Client) -> dict[str, Any]:
    response = await client.get("/api/models")
    assert response.status_code == 200
    offered: dict[str, Any] = await response.get_json()
    return offered


async def test_a_model_only_the_second_upstream_lists_goes_there_streamed_and_whole(
    start: Start, fake: FakeUpstream, second: FakeUpstream
) -> None:
    async with start() as client:
        streamed = await client.post("/api/chat/stream", json=chat("qwen3:4b"))
        whole = await client.post("/api/chat", json=chat("qwen3:4b"))
    assert texts(parse_events(await streamed.get_data())) == "Echo: Hello"
    assert whole.status_code == 200
    assert [r.json["model"] for r in second.chat_requests()] == ["qwen3:4b"] * 2
    assert fake.chat_requests() == []


async def test_an_alias_sends_the_upstream_s_model_id(
    start: Start, fake: FakeUpstream, second: FakeUpstream
) -> None:
    async with start('aliases = { "local" = "llama3.2:3b" }') as client:
        streamed = await client.post("/api/chat/stream", json=chat("local"))
        whole = await client.post("/api/chat", json=chat("local"))
    assert parse_events(await streamed.get_data())[-1][0] == "done"
    assert whole.status_code == 200
    assert [r.json["model"] for r in second.chat_requests()] == ["llama3.2:3b"] * 2
    assert fake.chat_requests() == []


async def test_a_model_several_upstreams_list_goes_to_the_first(
    start: Start, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.models = ["gpt-4o-mini", "shared"]
    async with start() as client:
        response = await client.post("/api/chat", json=chat("shared"))
        offered = await models(client)
    assert response.status_code == 200
    assert [r.json["model"] for r in fake.chat_requests()] == ["shared"]
    assert second.chat_requests() == []
    assert offered["models"].count("shared") == 1


async def test_the_allow_list_offers_and_routes_only_the_models_it_names(
    start: Start, second: FakeUpstream
) -> None:
    async with start('models = ["qwen3:4b"]') as client:
        offered = await models(client)
        refused = await client.post("/api/chat", json=chat("llama3.2:3b"))
        allowed = await client.post("/api/chat", json=chat("qwen3:4b"))
    assert "qwen3:4b" in offered["models"] and "llama3.2:3b" not in offered["models"]
    assert_error(refused.status_code, await refused.get_data(), 400, "MODEL_NOT_ALLOWED")
    assert allowed.status_code == 200
    assert [r.json["model"] for r in second.chat_requests()] == ["qwen3:4b"]


async def test_a_name_no_upstream_offers_is_not_allowed(start: Start) -> None:
    async with start() as client:
        refused = await client.post("/api/chat/stream", json=chat("nobody-has-this"))
    error = assert_error(refused.status_code, await refused.get_data(), 400, "MODEL_NOT_ALLOWED")
    assert "No upstream offers it" in error["message"]


async def test_models_allowed_star_takes_what_no_other_upstream_lists(
    start: Start, fake: FakeUpstream, second: FakeUpstream
) -> None:
    async with start(models_allowed=["*"]) as client:
        listed = await client.post("/api/chat", json=chat("qwen3:4b"))
        anything = await client.post("/api/chat", json=chat("my-own-model"))
        offered = await models(client)
    assert listed.status_code == anything.status_code == 200
    assert [r.json["model"] for r in second.chat_requests()] == ["qwen3:4b"]
    assert [r.json["model"] for r in fake.chat_requests()] == ["my-own-model"]
    assert offered["any_model"] is True


async def test_the_picker_offers_the_union_default_first_with_aliases_and_prices(
    start: Start,
) -> None:
    extra = (
        'aliases = { "local" = "llama3.2:3b" }\n'
        'prices = { "llama3.2:3b" = { input = 0.1, output = 0.2 }, '
        '"qwen3:4b" = { input = 1, output = 3 } }'
    )
    async with start(extra) as client:
        offered = await models(client)
    assert offered["default"] == "gpt-4o-mini"
    assert offered["models"] == [
        "gpt-4o-mini",
        "fake-large",
        "fake-small",
        "llama3.2:3b",
        "qwen3:4b",
        "shared",
        "local",
    ]
    assert offered["warnings"] == []
    # An alias costs what the model it stands for costs.
    assert offered["prices"] == {
        "llama3.2:3b": {"input_per_million": 0.1, "output_per_million": 0.2},
        "qwen3:4b": {"input_per_million": 1.0, "output_per_million": 3.0},
        "local": {"input_per_million": 0.1, "output_per_million": 0.2},
    }


async def test_an_upstream_that_is_down_removes_only_its_models_and_warns_once(
    start: Start, fake: FakeUpstream, second: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "quartchat")
    second.stop()  # its port now refuses connections
    async with start('aliases = { "local" = "llama3.2:3b" }', models_cache_seconds=0) as client:
        first = await models(client)
        again = await models(client)
        streamed = await client.post("/api/chat/stream", json=chat("fake-small"))
        v1 = await (await client.get("/v1/models")).json
    assert first["models"] == ["gpt-4o-mini", "fake-large", "fake-small"]
    assert [m["id"] for m in v1["data"]] == first["models"]
    assert first["warnings"] == [down_warning("second")]
    assert "'second'" in first["warnings"][0]
    assert again == first
    said = [r for r in caplog.records if r.getMessage() == down_warning("second")]
    assert len(said) == 1  # when it went down, not per request
    assert said[0].levelno == logging.WARNING
    assert texts(parse_events(await streamed.get_data())) == "Echo: Hello"
    assert [r.json["model"] for r in fake.chat_requests()] == ["fake-small"]


async def test_v1_models_lists_the_union_each_model_owned_by_its_upstream(start: Start) -> None:
    async with start('aliases = { "local" = "llama3.2:3b" }') as client:
        listed = await (await client.get("/v1/models")).json
    owners = {m["id"]: m["owned_by"] for m in listed["data"]}
    assert owners == {
        "gpt-4o-mini": "default",
        "fake-large": "default",
        "fake-small": "default",
        "llama3.2:3b": "second",
        "qwen3:4b": "second",
        "shared": "second",
        "local": "second",
    }


async def test_the_default_upstream_down_keeps_its_default_model_and_the_others(
    start: Start, fake: FakeUpstream
) -> None:
    fake.stop()
    async with start() as client:
        offered = await models(client)
    assert offered["models"] == ["gpt-4o-mini", "llama3.2:3b", "qwen3:4b", "shared"]
    assert offered["warnings"] == [down_warning("default")]


async def test_every_upstream_s_client_is_closed_at_shutdown(start: Start) -> None:
    async with start() as client:
        registry = client.app.extensions["upstreams"]
        clients = list(registry.clients.values())
        assert [c.name for c in clients] == ["default", "second"]
        assert client.app.extensions["upstream"] is clients[0]
    assert all(c.http.is_closed for c in clients)


def test_a_price_is_the_routed_upstream_s_when_two_price_one_model(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.toml"
    path.write_text(
        '[[upstreams]]\nname = "a"\nbase_url = "http://a.test/v1"\n'
        "prices = { m = { input = 1, output = 2 } }\n"
        '[[upstreams]]\nname = "b"\nbase_url = "http://b.test/v1"\n'
        'aliases = { "cheap" = "m" }\nprices = { m = { input = 0.5, output = 1 } }\n'
    )
    settings = make_settings(upstreams_file=path)
    registry = Registry.build(settings, load(settings, {}))
    assert registry.price("m") == Price(1, 2)  # the first that prices it
    assert registry.price("m", "b") == Price(0.5, 1)
    assert registry.price("cheap", "b") == Price(0.5, 1)  # an alias: its model's price
    assert registry.price("unpriced") is None


async def test_a_principal_s_allowed_models_narrow_what_the_policy_allows(start: Start) -> None:
    async with start() as client:
        policy = client.app.extensions["models"]
        await policy.check("qwen3:4b", frozenset({"qwen3:4b"}))
        with pytest.raises(APIError) as refused:
            await policy.check("qwen3:4b", frozenset({"fake-small"}))
        offered = await policy.listed(frozenset({"fake-small", "qwen3:4b"}))
    assert refused.value.code == "MODEL_NOT_ALLOWED"
    assert offered == ["fake-small", "qwen3:4b"]
