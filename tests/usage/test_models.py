"""The model allow-list: MODELS_ALLOWED, or what the upstream's /models lists, and the default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quartchat import create_app
from quartchat.db import Database
from quartchat.db.tables import conversations

from ..conftest import CHAT, assert_error, make_settings
from ..fake_upstream import FakeUpstream

COMPLETION = {
    "id": "c",
    "model": "m",
    "created": 1,
    "choices": [{"index": 0, "message": {"content": "Hi"}, "finish_reason": "stop"}],
}
PATHS = ["/api/chat", "/api/chat/stream"]


@pytest.fixture
def allowed() -> str:
    return ""


@pytest.fixture
async def client(allowed: str, upstream: respx.MockRouter) -> AsyncIterator[Client]:
    upstream._assert_all_called = False
    upstream.post("/chat/completions").mock(side_effect=answer)
    app = create_app(
        make_settings(models_allowed=allowed),
        transport=httpx.MockTransport(upstream.async_handler),
    )
    async with app.test_app():
        yield app.test_client()


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=COMPLETION)


def lists(upstream: respx.MockRouter, *ids: str) -> respx.Route:
    return upstream.get("/models").respond(json={"data": [{"id": i} for i in ids]})


async def ask(client: Client, path: str, model: str) -> Any:
    return await client.post(path, json={**CHAT, "model": model, "max_tokens": 2**31 - 1})


def completions(upstream: respx.MockRouter) -> int:
    return upstream.routes[0].call_count


@pytest.mark.parametrize("path", PATHS)
async def test_an_unlisted_model_is_400_and_never_reaches_the_upstream(
    client: Client, upstream: respx.MockRouter, path: str
) -> None:
    lists(upstream, "fake-large")
    response = await ask(client, path, "secret-expensive-model")
    error = assert_error(response.status_code, await response.get_data(), 400, "MODEL_NOT_ALLOWED")
    assert "secret-expensive-model" in error["message"]
    assert completions(upstream) == 0


async def test_a_listed_model_and_the_default_are_allowed(
    client: Client, upstream: respx.MockRouter
) -> None:
    lists(upstream, "fake-large")
    assert (await ask(client, "/api/chat", "fake-large")).status_code == 200
    assert (await ask(client, "/api/chat", "gpt-4o-mini")).status_code == 200
    assert completions(upstream) == 2


async def test_when_the_list_cannot_be_fetched_only_the_default_is_allowed_and_it_says_so(
    client: Client, upstream: respx.MockRouter
) -> None:
    upstream.get("/models").respond(500)
    response = await ask(client, "/api/chat", "fake-large")
    error = assert_error(response.status_code, await response.get_data(), 400, "MODEL_NOT_ALLOWED")
    assert "could not be fetched" in error["message"]
    assert "MODELS_ALLOWED=*" in error["message"]
    assert (await ask(client, "/api/chat", "gpt-4o-mini")).status_code == 200


@pytest.mark.parametrize("allowed", ["*"])
async def test_models_allowed_star_lets_a_model_no_list_names_through(
    client: Client, upstream: respx.MockRouter
) -> None:
    listing = lists(upstream, "fake-large")
    assert (await ask(client, "/api/chat", "served-but-unlisted")).status_code == 200
    assert listing.call_count == 0


@pytest.mark.parametrize("allowed", ["alpha, beta"])
async def test_models_allowed_decides_alone_and_is_what_the_picker_offers(
    client: Client, upstream: respx.MockRouter
) -> None:
    listing = lists(upstream, "gamma")
    assert (await ask(client, "/api/chat", "beta")).status_code == 200
    refused = await ask(client, "/api/chat", "gamma")
    assert_error(refused.status_code, await refused.get_data(), 400, "MODEL_NOT_ALLOWED")
    offered = await (await client.get("/api/models")).get_json()
    assert offered == {
        "default": "gpt-4o-mini",
        "models": ["gpt-4o-mini", "alpha", "beta"],
        "any_model": False,
        "warnings": [],
        "prices": {},
    }
    assert listing.call_count == 0


# -- conversations: the model of their settings --------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"models_allowed": ""}


async def test_a_conversation_naming_an_unlisted_model_is_refused_when_its_turn_starts(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    made = await (await client.post("/api/conversations", json={})).get_json()
    db: Database = app.extensions["db"]
    async with db.write() as connection:  # saved before the allow-list, or imported
        await connection.execute(
            update(conversations)
            .where(conversations.c.id == made["id"])
            .values(settings={"model": "not-listed"})
        )
    response = await client.post(
        f"/api/conversations/{made['id']}/messages", json={"content": "hi", "client_id": "c"}
    )
    assert_error(response.status_code, await response.get_data(), 400, "MODEL_NOT_ALLOWED")
    assert fake.chat_requests() == []
    found = await (await client.get(f"/api/conversations/{made['id']}")).get_json()
    reply = next(m for m in found["messages"] if m["role"] == "assistant")
    assert (reply["status"], reply["error"]["code"]) == ("error", "MODEL_NOT_ALLOWED")


async def test_settings_naming_an_unlisted_model_are_not_saved(
    ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    refused = await client.post("/api/conversations", json={"settings": {"model": "not-listed"}})
    assert_error(refused.status_code, await refused.get_data(), 400, "MODEL_NOT_ALLOWED")
    made = await (await client.post("/api/conversations", json={})).get_json()
    changed = await client.patch(
        f"/api/conversations/{made['id']}", json={"settings": {"model": "not-listed"}}
    )
    assert_error(changed.status_code, await changed.get_data(), 400, "MODEL_NOT_ALLOWED")
    listed = await client.patch(
        f"/api/conversations/{made['id']}", json={"settings": {"model": "fake-small"}}
    )
    assert listed.status_code == 200  # the fake lists it


@pytest.mark.parametrize(
    "settings_overrides", [{"models_allowed": "", "openai_model": None, "models_cache_seconds": 0}]
)
async def test_a_conversation_naming_no_model_is_sent_the_first_model_the_upstream_lists(
    ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    fake.models = ["gemma-3-270m"]  # read afresh: the list is not cached
    made = await (await client.post("/api/conversations", json={})).get_json()
    response = await client.post(
        f"/api/conversations/{made['id']}/messages", json={"content": "hi", "client_id": "c"}
    )
    assert response.status_code == 200, await response.get_data()
    await response.get_data()
    assert [r.json["model"] for r in fake.chat_requests()] == ["gemma-3-270m"]
