"""The writes of messages (add; a reply's checkpoint, heartbeat, finish) touch only the owner's."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy.engine import URL

from quartchat.auth import users
from quartchat.conversations import store
from quartchat.db import Database
from quartchat.db.tx import run_in


async def a_user(db: Database, email: str) -> int:
    async with db.write() as connection:
        return (await users.create(connection, email, None)).id


@pytest.mark.parametrize("write", ["checkpoint", "heartbeat", "finish"])
async def test_a_reply_write_with_another_owner_changes_nothing(database: URL, write: str) -> None:
    db = Database.open(database)
    try:
        ann, eve = await a_user(db, "ann@example.com"), await a_user(db, "eve@example.com")
        async with db.write() as connection:
            made = await store.create(connection, ann, title="ann's", settings={})
            reply = await run_in(
                connection, store.add, ann, made.id, role="assistant", content="",
                parent_id=None, status="streaming",
            )  # fmt: skip
        assert reply is not None
        works = {
            "checkpoint": partial(store.checkpoint, content="e"),
            "heartbeat": partial(store.heartbeat),
            "finish": partial(store.finish, content="e", status="complete"),
        }
        await db.run(partial(works[write], owner_id=eve, message_id=reply.id))
        async with db.read() as connection:
            (after,) = await run_in(connection, store.messages_of, ann, made.id)
        assert after == reply  # not its text, status or time
        # while the owner's own write goes through
        await db.run(partial(store.checkpoint, owner_id=ann, message_id=reply.id, content="ann's"))
        async with db.read() as connection:
            (after,) = await run_in(connection, store.messages_of, ann, made.id)
        assert after.content == "ann's"
    finally:
        await db.close()


async def test_adding_a_message_to_another_owners_conversation_writes_nothing(
    database: URL,
) -> None:
    db = Database.open(database)
    try:
        ann, eve = await a_user(db, "ann@example.com"), await a_user(db, "eve@example.com")
        async with db.write() as connection:
            made = await store.create(connection, ann, title="ann's", settings={})
        added = await db.run(
            partial(store.add, owner_id=eve, conversation_id=made.id, role="user",
                    content="eve's", parent_id=None)
        )  # fmt: skip
        assert added is None  # refused, as a value
        async with db.read() as connection:
            assert await run_in(connection, store.messages_of, ann, made.id) == []
        # while the owner's own message goes in
        mine = await db.run(
            partial(store.add, owner_id=ann, conversation_id=made.id, role="user",
                    content="ann's", parent_id=None)
        )  # fmt: skip
        async with db.read() as connection:
            assert await run_in(connection, store.messages_of, ann, made.id) == [mine]
    finally:
        await db.close()
