"""MAX_REPLY_SECONDS: a reply's total time, however busy its upstream; and MAX_TOKENS_LIMIT on
the streamed paths."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat.errors import APIError
from quartchat.streaming.watch import LiveStreams

from ..conftest import CHAT, LiveClient, error_event, parse_events
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..streaming.test_watch import Arriving, VirtualTime, on_virtual_time
from .conftest import DEADLINE


def endless() -> Reply:
    """An upstream that keeps streaming, a word every 50 ms, for 20 s: far past the limit."""
    return Reply(chunks=completion_chunks(["word "] * 400), delay=0.05)


def test_a_busy_stream_is_ended_at_its_longest_time() -> None:
    async def ended_at(clock: VirtualTime) -> tuple[float, str]:
        streams = LiveStreams(ping_seconds=1, idle_seconds=100, longest_seconds=5)
        watch = streams.watch()
        upstream = Arriving(every=0.3)
        try:
            while clock.now < 60:
                await watch.next(upstream)
                watch.sent()
        except APIError as error:
            return clock.now, error.code
        finally:
            streams.forget(watch)
        return clock.now, "never ended"

    at, code = on_virtual_time(ended_at)
    assert code == "REPLY_TOO_LONG"
    assert 5 <= at < 5.3  # at the next read after the limit


async def test_a_stream_past_max_reply_seconds_ends_with_reply_too_long_and_closes_the_upstream(
    live: LiveClient, fake: FakeUpstream
) -> None:
    fake.reply_with(endless())
    async with live(max_reply_seconds=0.5) as client:
        response = await client.post("/api/chat/stream", json=CHAT)
        events = parse_events(await response.get_data())
    assert events[0][0] == "chunk"
    assert error_event(events)["code"] == "REPLY_TOO_LONG"
    assert await asyncio.to_thread(fake.wait_for_disconnect, 10) is not None


async def ended_reply(client: Client, conversation_id: str) -> dict[str, Any]:
    """The conversation's reply once its run's final write is done."""
    async with asyncio.timeout(DEADLINE):
        while True:
            found = await (await client.get(f"/api/conversations/{conversation_id}")).get_json()
            reply: dict[str, Any] = next(m for m in found["messages"] if m["role"] == "assistant")
            if reply["status"] != "streaming":
                return reply
            await asyncio.sleep(0.02)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_reply_seconds": 0.5, "max_tokens_limit": 1000}


async def test_a_conversation_reply_past_the_limit_is_saved_as_it_is_with_the_error(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    made = await (await client.post("/api/conversations", json={})).get_json()
    fake.reply_with(endless())
    response = await client.post(
        f"/api/conversations/{made['id']}/messages", json={"content": "go", "client_id": "c"}
    )
    assert error_event(parse_events(await response.get_data()))["code"] == "REPLY_TOO_LONG"
    reply = await ended_reply(client, made["id"])
    assert (reply["status"], reply["error"]["code"]) == ("error", "REPLY_TOO_LONG")
    assert reply["content"].startswith("word word")
    assert fake.chat_requests()[-1].json["max_tokens"] == 1000


async def test_a_run_nobody_reads_is_ended_at_the_limit_too(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    client, _ = ann
    made = await (await client.post("/api/conversations", json={})).get_json()
    fake.reply_with(endless())
    async with client.request(
        f"/api/conversations/{made['id']}/messages",
        method="POST",
        headers={"Content-Type": "application/json"},
    ) as connection:
        await connection.send(b'{"content": "go", "client_id": "c"}')
        await connection.send_complete()
        await asyncio.wait_for(connection.receive(), DEADLINE)
        await connection.disconnect()  # nobody reads the run from here on
    assert await asyncio.to_thread(fake.wait_for_disconnect, 10) is not None
    reply = await ended_reply(client, made["id"])
    assert (reply["status"], reply["error"]["code"]) == ("error", "REPLY_TOO_LONG")
