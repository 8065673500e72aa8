"""The sidebar's list, the change feed, search, deletion, export and import."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, select, text

from quartchat.conversations import search, turns
from quartchat.db.tables import messages

from ..conftest import assert_error
from .conftest import body, conversation, new_conversation, say


async def test_the_list_is_paged_newest_first_by_a_cursor(ann: Client) -> None:
    made = [await new_conversation(ann, title=f"chat {i}") for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/conversations?limit=3" + (f"&before={cursor}" if cursor else "")
        page = await body(await ann.get(query))
        seen += [c["title"] for c in page["items"]]
        assert set(page["items"][0]) == {"id", "title", "updated_at", "pinned", "archived"}
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [c["title"] for c in reversed(made)]


async def test_a_conversation_with_a_new_turn_moves_to_the_top(ann: Client) -> None:
    older = await new_conversation(ann, title="older")
    await new_conversation(ann, title="newer")
    await say(ann, older["id"], "hello", "c-1")
    listed = await body(await ann.get("/api/conversations"))
    assert listed["items"][0]["id"] == older["id"]


async def test_the_change_feed_tells_another_device_what_changed_and_what_went(
    ann: Client,
) -> None:
    kept = await new_conversation(ann, title="kept")
    gone = await new_conversation(ann, title="gone")
    start = await body(await ann.get("/api/conversations/changes?since=2000-01-01T00:00:00+00:00"))
    since = start["now"]
    await ann.patch(f"/api/conversations/{kept['id']}", json={"title": "renamed"})
    await ann.delete(f"/api/conversations/{gone['id']}")
    feed = await body(await ann.get(f"/api/conversations/changes?since={since}"))
    assert [c["title"] for c in feed["items"]] == ["renamed"]
    assert feed["deleted"] == [gone["id"]]
    quiet = await body(await ann.get(f"/api/conversations/changes?since={feed['now']}"))
    assert quiet == {"items": [], "deleted": [], "now": feed["now"]}


async def test_a_deleted_conversation_can_be_restored_until_it_is_purged(
    app: Quart, ann: Client
) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "remember the zebra", "c-1")
    assert (await ann.delete(f"/api/conversations/{made['id']}")).status_code == 200
    assert (await ann.get(f"/api/conversations/{made['id']}")).status_code == 404
    assert (await body(await ann.get("/api/search?q=zebra")))["items"] == []
    assert (await ann.post(f"/api/conversations/{made['id']}/restore", json={})).status_code == 200
    assert len((await conversation(ann, made["id"]))["messages"]) == 2
    await ann.delete(f"/api/conversations/{made['id']}")
    await turns.housekeeping(app.extensions["db"], purge_after=turns.STALE_AFTER * 0)
    response = await ann.post(f"/api/conversations/{made['id']}/restore", json={})
    assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")
    async with app.extensions["db"].read() as connection:
        left = await connection.scalar(select(func.count()).select_from(messages))
        indexed = (
            await connection.scalar(
                text("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zebra'")
            )
            if connection.dialect.name == "sqlite"
            else 0
        )
    assert (left, indexed) == (0, 0)


# -- search ---------------------------------------------------------------------------------


async def test_search_finds_messages_by_words_and_a_prefix(ann: Client) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "The quick brown fox jumps", "c-1")
    await new_conversation(ann, title="Quarterly numbers")
    for query, hits in (("brown fox", 2), ("FOX", 2), ("jum", 2), ("fox cat", 0), ("quarterly", 1)):
        found = await body(await ann.get(f"/api/search?q={query}"))
        assert len(found["items"]) == hits, query
    first = (await body(await ann.get("/api/search?q=quick")))["items"][0]
    assert first["conversation_id"] == made["id"]
    assert "quick" in first["snippet"].lower()


HOSTILE = [
    '"',
    '"unbalanced',
    "fox AND cat",
    "fox OR",
    "NOT",
    "*",
    "fox*",
    "((fox",
    "fox)",
    "NEAR(fox jumps)",
    "content:fox",
    "'; DROP TABLE messages; --",
    "!@#$%^&*()",
    "x" * 10_000,
    "fox " * 3000,
    "\\",
    "\u0000",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_search_takes_any_text_without_an_error(ann: Client, query: str) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "The quick brown fox jumps", "c-1")
    response = await ann.get("/api/search", query_string={"q": query})
    assert response.status_code == 200, await response.get_data()
    assert isinstance((await body(response))["items"], list)
    assert (await body(await ann.get("/api/search?q=fox")))["items"]  # and the index is fine


def test_search_terms_are_words_only() -> None:
    assert search.search_terms('"fox" AND (cat*') == ["fox", "and", "cat"]
    assert len(search.search_terms("a " * 100)) == search.MAX_TERMS
    assert search.search_terms("ünïcode 数据") == ["ünïcode", "数据"]


# -- export and import ---------------------------------------------------------------------


async def test_an_export_imports_back_as_the_same_conversations(ann: Client, eve: Client) -> None:
    made = await new_conversation(ann, title="round trip", settings={"system": "Terse."})
    await say(ann, made["id"], "one", "c-1")
    await say(ann, made["id"], "two", "c-2")
    exported = await ann.get("/api/export")
    assert "attachment" in exported.headers["Content-Disposition"]
    document = await body(exported)
    assert (document["format"], document["version"]) == ("quartchat", 1)
    result = await body(
        await eve.post(
            "/api/import", data=orjson.dumps(document), headers={"Content-Type": "application/json"}
        )
    )
    assert (result["imported"], result["skipped"]) == (1, 0)
    (theirs,) = (await body(await eve.get("/api/conversations")))["items"]
    copy = await conversation(eve, theirs["id"])
    assert copy["title"] == "round trip" and copy["settings"]["system"] == "Terse."
    assert sorted(m["content"] for m in copy["messages"]) == [
        "Echo: one",
        "Echo: two",
        "one",
        "two",
    ]


async def test_importing_twice_imports_once(ann: Client) -> None:
    document = {"format": "quartchat", "version": 1, "conversations": [local_conversation("b1")]}
    first = await body(await ann.post("/api/import", json=document))
    second = await body(await ann.post("/api/import", json=document))
    assert (first["imported"], second["imported"], second["skipped"]) == (1, 0, 1)
    assert len((await body(await ann.get("/api/conversations")))["items"]) == 1


def local_conversation(cid: str) -> dict[str, Any]:
    """A conversation as the page keeps it in the browser (the first format: no parentId)."""
    return {
        "id": cid,
        "title": "from the browser",
        "createdAt": 1_700_000_000_000,
        "updatedAt": 1_700_000_100_000,
        "settings": {"model": "", "temperature": None, "system": ""},
        "messages": [
            {"id": f"{cid}-u", "role": "user", "content": "hi", "createdAt": 1_700_000_000_000},
            {
                "id": f"{cid}-a",
                "role": "assistant",
                "content": "hello",
                "status": "done",
                "createdAt": 1,
            },
        ],
    }


async def test_a_browser_conversation_in_the_first_format_becomes_a_chain(ann: Client) -> None:
    document = {"format": "quartchat", "version": 1, "conversations": [local_conversation("b1")]}
    await ann.post("/api/import", json=document)
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    found = await conversation(ann, listed["id"])
    question, reply = sorted(found["messages"], key=lambda m: m["role"], reverse=True)
    assert reply["parent_id"] == question["id"] and found["leaf_id"] == reply["id"]


CHATGPT = [
    {
        "id": "gpt-1",
        "title": "Trip <b>ideas</b>",
        "create_time": 1700000000.5,
        "current_node": "n3",
        "mapping": {
            "root": {"id": "root", "message": None, "parent": None, "children": ["n1"]},
            "n1": {
                "id": "n1",
                "parent": "root",
                "message": {
                    "author": {"role": "user"},
                    "content": {"parts": ["Where to go?"]},
                    "create_time": 1700000001,
                },
            },
            "sys": {
                "id": "sys",
                "parent": "n1",
                "message": {"author": {"role": "tool"}, "content": {"parts": ["internal"]}},
            },
            "n3": {
                "id": "n3",
                "parent": "sys",
                "message": {
                    "author": {"role": "assistant"},
                    "content": {"parts": ["<script>alert(1)</script> Lisbon."]},
                    "create_time": 1700000002,
                },
            },
            "__proto__": {
                "id": "__proto__",
                "parent": None,
                "message": {"author": {"role": "user"}, "content": {"parts": ["polluted?"]}},
            },
        },
    },
    {"title": "broken", "mapping": "not a dict"},
]


async def test_chatgpt_s_export_imports_as_text_and_skips_what_it_cannot_read(ann: Client) -> None:
    result = await body(await ann.post("/api/import", json=CHATGPT))
    assert result["imported"] == 1
    assert result["problems"] == ["Conversation 2 could not be read: skipped."]
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    found = await conversation(ann, listed["id"])
    assert found["title"] == "Trip <b>ideas</b>"  # kept as text; the page shows it as text
    by_content = {m["content"]: m for m in found["messages"]}
    reply = by_content["<script>alert(1)</script> Lisbon."]
    assert reply["parent_id"] == by_content["Where to go?"]["id"]  # the tool node is skipped
    assert found["leaf_id"] == reply["id"]
    assert "internal" not in by_content


async def test_a_file_that_is_neither_format_is_refused_politely(ann: Client) -> None:
    result = await body(await ann.post("/api/import", json={"conversations": []}))
    assert result["imported"] == 0 and result["problems"]
    bad = await ann.post(
        "/api/import", data=b"not json", headers={"Content-Type": "application/json"}
    )
    assert_error(bad.status_code, await bad.get_data(), 400, "INVALID_REQUEST")


async def test_markdown_export_is_the_path_shown(ann: Client) -> None:
    made = await new_conversation(ann, title="notes")
    await say(ann, made["id"], "question one", "c-1")
    response = await ann.get(f"/api/conversations/{made['id']}/export?format=markdown")
    assert response.headers["Content-Type"].startswith("text/markdown")
    text_body = await response.get_data(as_text=True)
    assert text_body.startswith("# notes")
    assert (
        "**You:**\n\nquestion one" in text_body
        and "**Assistant:**\n\nEcho: question one" in text_body
    )


async def test_an_import_may_be_larger_than_a_chat_request(ann: Client) -> None:
    big = local_conversation("big")
    big["messages"][0]["content"] = "x" * (3 * 1024 * 1024)  # over MAX_BODY_BYTES (1 MiB)
    document = {"format": "quartchat", "version": 1, "conversations": [big]}
    response = await ann.post("/api/import", json=document)
    assert response.status_code == 200, await response.get_data()
    assert (await body(response))["imported"] == 1


async def test_two_tabs_importing_the_browser_s_conversations_at_once_import_them_once(
    ann: Client, app: Quart
) -> None:
    document = {
        "format": "quartchat",
        "version": 1,
        "conversations": [local_conversation(f"b{i}") for i in range(5)],
    }
    other_tab = app.test_client()
    other_tab.cookie_jar = ann.cookie_jar
    results = await asyncio.gather(
        ann.post("/api/import", json=document), other_tab.post("/api/import", json=document)
    )
    counts = [await body(r) for r in results]
    assert sum(c["imported"] for c in counts) == 5
    assert sum(c["skipped"] for c in counts) == 5
    assert len((await body(await ann.get("/api/conversations")))["items"]) == 5


# -- dates, re-imports and usage kept (issue 22, item 7) ---------------------------------------


async def titles(client: Client) -> list[str]:
    return [c["title"] for c in (await body(await client.get("/api/conversations")))["items"]]


def millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


async def test_an_import_keeps_its_dates_and_sits_below_current_work(ann: Client) -> None:
    await new_conversation(ann, title="current work")
    old = {**local_conversation("b1"), "title": "old chat"}
    first: dict[str, Any] = CHATGPT[0]  # type: ignore[assignment]
    gpt = {**first, "title": "older gpt chat", "update_time": 1700000050}
    await ann.post(
        "/api/import", json={"format": "quartchat", "version": 1, "conversations": [old]}
    )
    await ann.post("/api/import", json=[gpt])
    assert await titles(ann) == ["current work", "old chat", "older gpt chat"]
    listed = (await body(await ann.get("/api/conversations")))["items"]
    found = await conversation(ann, listed[1]["id"])
    assert millis(found["created_at"]) == old["createdAt"]
    assert millis(found["updated_at"]) == old["updatedAt"]
    assert millis(listed[2]["updated_at"]) == 1700000050_000


async def test_a_file_dated_in_the_future_is_not_pinned_above_current_work(ann: Client) -> None:
    future = {**local_conversation("b1"), "title": "from the future", "updatedAt": 99999999999999}
    await ann.post(
        "/api/import", json={"format": "quartchat", "version": 1, "conversations": [future]}
    )
    await new_conversation(ann, title="current work")
    assert await titles(ann) == ["current work", "from the future"]


async def test_an_imported_conversation_is_in_the_change_feed_of_other_devices(
    ann: Client,
) -> None:
    start = await body(await ann.get("/api/conversations/changes?since=2000-01-01T00:00:00+00:00"))
    document = {"format": "quartchat", "version": 1, "conversations": [local_conversation("b1")]}
    await ann.post("/api/import", json=document)
    feed = await body(await ann.get(f"/api/conversations/changes?since={start['now']}"))
    assert [c["title"] for c in feed["items"]] == ["from the browser"]


async def test_importing_my_own_export_again_skips_every_conversation(
    ann: Client, eve: Client
) -> None:
    for title in ("first", "second"):
        made = await new_conversation(ann, title=title)
        await say(ann, made["id"], f"about {title}", f"c-{title}")
    document = await body(await ann.get("/api/export"))
    result = await body(await ann.post("/api/import", json=document))
    assert (result["imported"], result["skipped"]) == (0, 2)
    assert sorted(await titles(ann)) == ["first", "second"]
    # Another person's ids are not mine: Eve imports Ann's file once, then skips it too.
    theirs = await body(await eve.post("/api/import", json=document))
    again = await body(await eve.post("/api/import", json=document))
    assert (theirs["imported"], again["imported"], again["skipped"]) == (2, 0, 2)


async def test_importing_chatgpt_s_export_twice_imports_once(ann: Client) -> None:
    first = await body(await ann.post("/api/import", json=CHATGPT))
    second = await body(await ann.post("/api/import", json=CHATGPT))
    assert (first["imported"], second["imported"], second["skipped"]) == (1, 0, 1)


async def test_an_import_keeps_token_counts_and_finish_reasons(ann: Client) -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
    kept = local_conversation("b1")
    kept["messages"][1] |= {"usage": usage, "finishReason": "length", "parentId": "b1-u"}
    kept["messages"][0] |= {"parentId": None}
    await ann.post(
        "/api/import", json={"format": "quartchat", "version": 1, "conversations": [kept]}
    )
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    reply = next(
        m for m in (await conversation(ann, listed["id"]))["messages"] if m["role"] == "assistant"
    )
    assert (reply["usage"], reply["finish_reason"]) == (usage, "length")
    exported = await body(await ann.get("/api/export"))
    (again,) = [m for m in exported["conversations"][0]["messages"] if m["role"] == "assistant"]
    assert (again["usage"], again["finishReason"]) == (usage, "length")


# -- the sidebar's order: only a turn moves a conversation (issue 22, item 8) -----------------


async def test_renaming_keeps_a_conversation_in_its_place(ann: Client) -> None:
    older = await new_conversation(ann, title="older")
    await new_conversation(ann, title="newer")
    renamed = await body(
        await ann.patch(f"/api/conversations/{older['id']}", json={"title": "older, renamed"})
    )
    assert await titles(ann) == ["newer", "older, renamed"]
    assert renamed["updated_at"] == older["updated_at"]
    assert renamed["revision"] == older["revision"] + 1


async def test_an_undone_delete_puts_the_conversation_back_where_it_was(ann: Client) -> None:
    for title in ("oldest", "middle", "newest"):
        made = await new_conversation(ann, title=title)
        if title == "middle":
            middle = made
    start = await body(await ann.get("/api/conversations/changes?since=2000-01-01T00:00:00+00:00"))
    await ann.delete(f"/api/conversations/{middle['id']}")
    assert await titles(ann) == ["newest", "oldest"]
    await ann.post(f"/api/conversations/{middle['id']}/restore", json={})
    assert await titles(ann) == ["newest", "middle", "oldest"]
    # Other devices still hear of it: it is in the change feed again.
    feed = await body(await ann.get(f"/api/conversations/changes?since={start['now']}"))
    assert ([c["title"] for c in feed["items"]], feed["deleted"]) == (["middle"], [])
