"""Search and the sidebar at scale: the queries that bench/conversations_bench.py measures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import select, text

from quartchat.conversations import search, store
from quartchat.db import Database
from quartchat.db.tables import users
from quartchat.db.tx import run_in

from .conftest import body

START = datetime(2026, 1, 1, tzinfo=UTC)


async def owner_of(app: Quart, email: str) -> int:
    db: Database = app.extensions["db"]
    async with db.read() as connection:
        found = await connection.execute(select(users.c.id).where(users.c.email == email))
        return int(found.scalar_one())


async def write(app: Quart, owner_id: int, contents: list[str]) -> list[str]:
    """A conversation with these messages, oldest first; their ids."""
    db: Database = app.extensions["db"]
    ids = []
    async with db.write() as connection:
        made = await store.create(connection, owner_id, title="Notes", settings={})
        parent = None
        for content in contents:
            message = await run_in(
                connection, store.add, owner_id, made.id, role="user", content=content,
                parent_id=parent,
            )  # fmt: skip
            assert message is not None
            ids.append(parent := message.id)
            # A UUIDv7 orders by the millisecond: PostgreSQL's "newest first" is by id.
            await asyncio.sleep(0.002)
    return ids


async def hits(client: Client, query: str) -> list[str]:
    found = await body(await client.get("/api/search", query_string={"q": query}))
    return [h["message_id"] for h in found["items"] if h["message_id"]]


async def test_a_word_in_every_message_gives_the_newest_hits_first(app: Quart, ann: Client) -> None:
    ids = await write(
        app, await owner_of(app, "ann@example.com"), [f"the note {i}" for i in range(30)]
    )
    assert await hits(ann, "the") == ids[::-1][:20]


async def test_a_rare_word_is_found_far_behind_the_newest_messages(
    app: Quart, ann: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL looks at the newest RECENT messages first, then at its index alone.
    monkeypatch.setattr(search, "RECENT", 3)
    ids = await write(
        app, await owner_of(app, "ann@example.com"), ["a quokka here", *["filler"] * 10]
    )
    assert await hits(ann, "quokka") == [ids[0]]
    assert await hits(ann, "quok") == [ids[0]]


async def test_only_the_owner_s_hits_count_towards_the_page(
    app: Quart, ann: Client, eve: Client
) -> None:
    mine = await write(app, await owner_of(app, "ann@example.com"), ["shared word"] * 3)
    await write(app, await owner_of(app, "eve@example.com"), ["shared word"] * 30)
    assert await hits(ann, "shared") == mine[::-1]


async def test_a_last_word_shorter_than_three_characters_is_a_whole_word(
    app: Quart, ann: Client
) -> None:
    ids = await write(app, await owner_of(app, "ann@example.com"), ["go fox", "gopher"])
    assert await hits(ann, "go") == [ids[0]]
    assert await hits(ann, "gop") == [ids[1]]


async def test_the_snippet_is_cut_around_the_first_word_found(app: Quart, ann: Client) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    await write(app, await owner_of(app, "ann@example.com"), [f"{words} Needle after {words}"])
    found = await body(await ann.get("/api/search?q=needle"))
    assert found["items"][0]["snippet"] == "…w37 w38 w39 Needle after w0 w1 w2 w3 w4 w5 w6…"


def test_a_snippet_of_a_short_message_is_its_words_on_one_line() -> None:
    assert search.snippet("Hello  there,\nworld!", ["world"], prefix=False) == "Hello there, world"


async def test_a_deep_page_of_the_list_follows_its_cursor_through_equal_times(
    app: Quart, ann: Client
) -> None:
    owner_id = await owner_of(app, "ann@example.com")
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        for i in range(9):  # three at each instant: the id breaks the tie
            at = START + timedelta(minutes=i // 3)
            await store.create(connection, owner_id, title=f"c{i}", settings={}, created_at=at)
    seen: list[str] = []
    cursor = None
    while True:
        query = "/api/conversations?limit=2" + (f"&before={cursor}" if cursor else "")
        page = await body(await ann.get(query))
        seen += [c["id"] for c in page["items"]]
        if (cursor := page["next"]) is None:
            break
    async with db.read() as connection:
        every = await store.page(connection, owner_id, limit=100)
    assert seen == [c.id for c in every]
    assert len(set(seen)) == 9


async def test_sqlite_s_full_text_index_keeps_three_character_prefixes(app: Quart) -> None:
    db: Database = app.extensions["db"]
    if not db.sqlite:
        pytest.skip("PostgreSQL's search is its GIN index")
    async with db.read() as connection:
        made = await connection.scalar(
            text("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'")
        )
    assert "prefix='3'" in made
