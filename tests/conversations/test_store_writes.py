"""The reply writes of a turn (checkpoint, heartbeat, finish) touch only the owner's message."""

from __future__ import annotations

from functools import partial

import pytest
from sqlalchemy.engine import URL

from quartchat.auth import users
from quartchat.conversations import store
from quartchat.db import Database


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
            reply = await store.add(
                connection, ann, made.id, role="assistant", content="", parent_id=None,
                status="streaming",
            )  # fmt: skip
        works = {
            "checkpoint": partial(store.checkpoint, content="e"),
            "heartbeat": partial(store.heartbeat),
            "finish": partial(store.finish, content="e", status="complete"),
        }
        await db.run(partial(works[write], owner_id=eve, message_id=reply.id))
        async with db.read() as connection:
            (after,) = await store.messages_of(connection, ann, made.id)
        assert after == reply  # not its text, status or time
        # while the owner's own write goes through
        await db.run(partial(store.checkpoint, owner_id=ann, message_id=reply.id, content="ann's"))
        async with db.read() as connection:
            (after,) = await store.messages_of(connection, ann, made.id)
        assert after.content == "ann's"
    finally:
        await db.close()
