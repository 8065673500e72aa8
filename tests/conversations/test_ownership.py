"""Another user's conversation is not there: every route answers 404 and shows none of it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from ..conftest import assert_error
from .conftest import body, conversation, new_conversation, say


@pytest.fixture
async def anns(ann: Client) -> dict[str, Any]:
    """Ann's conversation with one exchange, and its messages' ids."""
    made = await new_conversation(ann, title="ann's private plans")
    await say(ann, made["id"], "the secret ingredient is saffron", "c-1")
    found = await conversation(ann, made["id"])
    question = next(m for m in found["messages"] if m["role"] == "user")
    return {"id": made["id"], "question": question["id"], "reply": found["leaf_id"]}


ROUTES = [
    ("GET", "/api/conversations/{id}", None),
    ("PATCH", "/api/conversations/{id}", {"title": "mine now"}),
    ("PATCH", "/api/conversations/{id}", {"leaf_id": "{reply}"}),
    ("DELETE", "/api/conversations/{id}", None),
    ("POST", "/api/conversations/{id}/restore", {}),
    ("POST", "/api/conversations/{id}/messages", {"content": "hi", "client_id": "x"}),
    ("POST", "/api/conversations/{id}/messages/{reply}/regenerate", {"client_id": "x"}),
    (
        "POST",
        "/api/conversations/{id}/messages/{question}/edit",
        {"content": "hi", "client_id": "x"},
    ),
    ("GET", "/api/conversations/{id}/messages/{reply}/events", None),
    ("GET", "/api/conversations/{id}/messages/{reply}/events?after=0", None),
    ("POST", "/api/conversations/{id}/messages/{reply}/stop", {}),
    ("GET", "/api/conversations/{id}/export", None),
    ("GET", "/api/conversations/{id}/export?format=markdown", None),
]


@pytest.mark.parametrize(
    ("method", "path", "payload"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
async def test_another_user_s_conversation_is_not_found(
    ann: Client,
    eve: Client,
    anns: dict[str, Any],
    method: str,
    path: str,
    payload: dict[str, Any] | None,
) -> None:
    url = path.format(**anns)
    data = {k: v.format(**anns) if isinstance(v, str) else v for k, v in (payload or {}).items()}
    response = await eve.open(url, method=method, json=data if payload is not None else None)
    raw = await response.get_data()
    assert_error(response.status_code, raw, 404, "NOT_FOUND")
    assert b"saffron" not in raw and b"private plans" not in raw
    # and nothing happened to it
    found = await conversation(ann, anns["id"])
    assert found["title"] == "ann's private plans"
    assert len(found["messages"]) == 2


async def test_another_user_s_conversations_are_not_listed_searched_or_exported(
    ann: Client, eve: Client, anns: dict[str, Any]
) -> None:
    await new_conversation(eve, title="eve's own")
    listed = await body(await eve.get("/api/conversations"))
    assert [c["title"] for c in listed["items"]] == ["eve's own"]
    assert (await body(await eve.get("/api/search?q=saffron")))["items"] == []
    assert (await body(await eve.get("/api/search?q=private")))["items"] == []
    everything = await eve.get("/api/export")
    assert b"saffron" not in await everything.get_data()
    changes = await body(
        await eve.get("/api/conversations/changes?since=2000-01-01T00:00:00+00:00")
    )
    assert anns["id"] not in orjson.dumps(changes).decode()


async def test_another_user_s_message_cannot_be_a_parent(
    ann: Client, eve: Client, anns: dict[str, Any]
) -> None:
    mine = await new_conversation(eve)
    response = await eve.post(
        f"/api/conversations/{mine['id']}/messages",
        json={"content": "hi", "client_id": "c-9", "parent_id": anns["reply"]},
    )
    assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
