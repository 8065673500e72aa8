"""Concurrent requests per user: counted before the upstream is opened, given back however the
response ends."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat.errors import APIError
from quartchat.usage.limits import LocalStreamSlots, StreamSlots

from ..conftest import CHAT, LiveClient, assert_error
from ..fake_upstream import FakeUpstream
from .conftest import eventually, hanging, streaming

# -- the in-process slots -------------------------------------------------------------------------


async def test_a_key_at_its_limit_is_refused_with_retry_after_while_another_key_gets_in() -> None:
    slots = LocalStreamSlots(2)
    await slots.acquire(1)
    await slots.acquire(1)
    with pytest.raises(APIError) as refused:
        await slots.acquire(1)
    error = refused.value
    assert (error.status_code, error.code) == (429, "TOO_MANY_STREAMS")
    assert int(error.headers["Retry-After"]) > 0
    await slots.acquire(2)


async def test_requests_arriving_at_once_are_admitted_exactly_up_to_the_limit() -> None:
    slots: StreamSlots = LocalStreamSlots(3)
    outcomes = await asyncio.gather(*(slots.acquire(7) for _ in range(10)), return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 3


async def test_a_slot_released_twice_gives_back_one_place() -> None:
    slots = LocalStreamSlots(2)
    first = await slots.acquire(1)
    await slots.acquire(1)
    first.release()
    first.release()
    assert slots.held(1) == 1


# -- the routes ---------------------------------------------------------------------------------


def held(app: Quart, user_id: int) -> int:
    slots: LocalStreamSlots = app.extensions["slots"]
    return slots.held(user_id)


async def test_a_fifth_stream_of_one_user_is_429_while_another_user_still_gets_in(
    app: Quart, ann: tuple[Client, int], eve: tuple[Client, int], fake: FakeUpstream
) -> None:
    fake.reply_with(*(hanging() for _ in range(4)))
    async with AsyncExitStack() as open_streams:
        for _ in range(4):
            await open_streams.enter_async_context(streaming(ann[0]))
        refused = await ann[0].post("/api/chat/stream", json=CHAT)
        assert_error(refused.status_code, await refused.get_data(), 429, "TOO_MANY_STREAMS")
        assert int(refused.headers["Retry-After"]) > 0
        assert len(fake.chat_requests()) == 4  # the refused one never reached the upstream
        other = await eve[0].post("/api/chat/stream", json=CHAT)
        assert other.status_code == 200
        assert b"event: done" in await other.get_data()


async def test_a_client_that_hangs_up_gives_its_slot_back(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    fake.reply_with(*(hanging() for _ in range(5)))
    async with AsyncExitStack() as open_streams:
        for _ in range(3):
            await open_streams.enter_async_context(streaming(ann[0]))
        async with streaming(ann[0]):
            assert held(app, ann[1]) == 4
        await eventually(lambda: held(app, ann[1]) == 3, "the slot of the stream left is back")
        async with streaming(ann[0]):  # the fifth stream, fourth at once: admitted
            assert held(app, ann[1]) == 4
    await eventually(lambda: held(app, ann[1]) == 0, "every slot is back")


async def test_a_whole_chat_and_a_conversation_turn_count_too(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    made = await (await client.post("/api/conversations", json={})).get_json()
    fake.reply_with(*(hanging() for _ in range(4)))
    async with AsyncExitStack() as open_streams:
        for _ in range(4):
            await open_streams.enter_async_context(streaming(client))
        whole = await client.post("/api/chat", json=CHAT)
        assert_error(whole.status_code, await whole.get_data(), 429, "TOO_MANY_STREAMS")
        turn = await client.post(
            f"/api/conversations/{made['id']}/messages", json={"content": "hi", "client_id": "c"}
        )
        assert_error(turn.status_code, await turn.get_data(), 429, "TOO_MANY_STREAMS")
    found = await (await client.get(f"/api/conversations/{made['id']}")).get_json()
    assert found["messages"] == []  # a refused turn writes nothing


async def test_a_conversation_turn_holds_a_slot_until_its_reply_ends_not_its_client(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, user_id = ann
    made = await (await client.post("/api/conversations", json={})).get_json()
    fake.reply_with(hanging())
    body = {"content": "hi", "client_id": "c-1"}
    turns = f"/api/conversations/{made['id']}/messages"
    async with streaming(client, turns, body) as connection:
        assert held(app, user_id) == 1
        headers = connection.headers  # type: ignore[attr-defined]
        reply_id = headers["Quartchat-Reply-Id"]
    await asyncio.sleep(0.1)  # the client has left; its reply runs on, and counts
    assert held(app, user_id) == 1
    await client.post(f"{turns}/{reply_id}/stop", json={})
    await eventually(lambda: held(app, user_id) == 0, "the turn's slot is back")


async def test_without_accounts_a_limit_set_counts_everyone_together(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(hanging())
    async with live(max_streams_per_user=1) as client, streaming(client):
        refused = await client.post("/api/chat/stream", json=CHAT)
        assert_error(refused.status_code, await refused.get_data(), 429, "TOO_MANY_STREAMS")
