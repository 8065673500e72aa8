"""Sending, regenerating, editing: what the server writes, and when."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quartchat.conversations import store, turns
from quartchat.db.tables import messages, now

from ..conftest import assert_error, error_event, texts
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .conftest import body, conversation, new_conversation, say


def path_of(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages shown: from the root down to the conversation's leaf."""
    by_id = {m["id"]: m for m in found["messages"]}
    path, node = [], by_id.get(found["leaf_id"])
    while node is not None:
        path.append(node)
        node = by_id.get(node["parent_id"])
    return path[::-1]


async def test_a_reply_streams_back_and_is_saved_by_the_server(ann: Client) -> None:
    made = await new_conversation(ann)
    response, events = await say(ann, made["id"], "Hello there", "c-1")
    assert response.status_code == 200
    assert texts(events) == "Echo: Hello there"
    assert events[-1][0] == "done"
    found = await conversation(ann, made["id"])
    question, reply = path_of(found)
    assert (question["role"], question["content"], question["client_id"]) == (
        "user",
        "Hello there",
        "c-1",
    )
    assert (reply["role"], reply["content"], reply["status"]) == (
        "assistant",
        "Echo: Hello there",
        "complete",
    )
    assert reply["usage"]["total_tokens"] > 0
    assert response.headers["Quartchat-Message-Id"] == question["id"]
    assert response.headers["Quartchat-Reply-Id"] == reply["id"]
    assert found["title"] == "Hello there"  # from the first message


async def test_the_whole_path_goes_upstream_with_the_system_prompt_and_settings(
    ann: Client, fake: FakeUpstream
) -> None:
    settings = {"system": "Be brief.", "model": "fake-small", "temperature": 0.2}
    made = await new_conversation(ann, settings=settings)
    await say(ann, made["id"], "first", "c-1")
    await say(ann, made["id"], "second", "c-2")
    sent = fake.chat_requests()[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "second"},
    ]
    assert (sent["model"], sent["temperature"]) == ("fake-small", 0.2)


async def test_sending_the_same_message_again_starts_nothing_new(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "only once", "c-1")
    asked = len(fake.chat_requests())
    response, events = await say(ann, made["id"], "only once", "c-1")
    assert response.status_code == 200
    assert texts(events) == "Echo: only once" and events[-1][0] == "done"
    assert len(fake.chat_requests()) == asked
    assert len((await conversation(ann, made["id"]))["messages"]) == 2


async def test_regenerating_keeps_the_old_reply_as_a_sibling_and_shows_the_new(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "question", "c-1")
    old = path_of(await conversation(ann, made["id"]))[-1]
    fake.reply_with(Reply(chunks=completion_chunks(["another ", "answer"])))
    response = await ann.post(
        f"/api/conversations/{made['id']}/messages/{old['id']}/regenerate",
        json={"client_id": "r-1"},
    )
    await response.get_data()
    found = await conversation(ann, made["id"])
    question, new = path_of(found)
    assert new["content"] == "another answer"
    siblings = [m for m in found["messages"] if m["parent_id"] == question["id"]]
    assert {m["content"] for m in siblings} == {"Echo: question", "another answer"}
    assert fake.chat_requests()[-1].json["messages"] == [{"role": "user", "content": "question"}]


async def test_editing_a_question_makes_a_sibling_question_with_its_own_reply(
    ann: Client,
) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "first try", "c-1")
    original = path_of(await conversation(ann, made["id"]))[0]
    response = await ann.post(
        f"/api/conversations/{made['id']}/messages/{original['id']}/edit",
        json={"content": "second try", "client_id": "e-1"},
    )
    await response.get_data()
    found = await conversation(ann, made["id"])
    assert [m["content"] for m in path_of(found)] == ["second try", "Echo: second try"]
    roots = [m for m in found["messages"] if m["parent_id"] is None]
    assert {m["content"] for m in roots} == {"first try", "second try"}


async def test_switching_branches_changes_the_path_shown(ann: Client) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "one", "c-1")
    first_leaf = (await conversation(ann, made["id"]))["leaf_id"]
    original = path_of(await conversation(ann, made["id"]))[0]
    await (
        await ann.post(
            f"/api/conversations/{made['id']}/messages/{original['id']}/edit",
            json={"content": "two", "client_id": "e-1"},
        )
    ).get_data()
    response = await ann.patch(f"/api/conversations/{made['id']}", json={"leaf_id": first_leaf})
    assert response.status_code == 200
    assert [m["content"] for m in path_of(await conversation(ann, made["id"]))] == [
        "one",
        "Echo: one",
    ]


async def test_a_change_against_an_older_revision_is_refused(ann: Client) -> None:
    made = await new_conversation(ann)
    renamed = await body(
        await ann.patch(
            f"/api/conversations/{made['id']}", json={"title": "mine", "revision": made["revision"]}
        )
    )
    assert renamed["revision"] == made["revision"] + 1
    stale = await ann.patch(
        f"/api/conversations/{made['id']}", json={"title": "theirs", "revision": made["revision"]}
    )
    error = assert_error(stale.status_code, await stale.get_data(), 409, "STALE")
    assert error["details"] == [{"revision": renamed["revision"]}]
    assert (await conversation(ann, made["id"]))["title"] == "mine"


async def test_an_upstream_refusal_is_an_http_error_and_the_reply_records_it(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    fake.reply_with(Reply(status=503, chunks=[b'{"error": {"message": "busy"}}'], headers={}))
    response = await ann.post(
        f"/api/conversations/{made['id']}/messages", json={"content": "hello", "client_id": "c-1"}
    )
    assert_error(response.status_code, await response.get_data(), 502, "UPSTREAM_ERROR")
    reply = path_of(await conversation(ann, made["id"]))[-1]
    assert reply["status"] == "error"
    assert reply["error"]["code"] == "UPSTREAM_ERROR"


async def test_an_upstream_refusal_names_the_saved_question_and_reply_in_its_headers(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    fake.reply_with(
        Reply(
            status=429,
            chunks=[b'{"error": {"message": "slow down"}}'],
            headers={"Content-Type": "application/json", "Retry-After": "3"},
        )
    )
    response = await ann.post(
        f"/api/conversations/{made['id']}/messages", json={"content": "hello", "client_id": "c-1"}
    )
    assert_error(response.status_code, await response.get_data(), 429, "UPSTREAM_RATE_LIMITED")
    question, reply = path_of(await conversation(ann, made["id"]))[-2:]
    assert response.headers["Quartchat-Message-Id"] == question["id"]
    assert response.headers["Quartchat-Reply-Id"] == reply["id"]
    assert response.headers["Retry-After"] == "3"


async def test_an_error_mid_stream_keeps_the_text_and_records_the_error(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    fake.reply_with(Reply(chunks=completion_chunks(["partial"])[:2], cut=True))
    _, events = await say(ann, made["id"], "hello", "c-1")
    assert error_event(events)["code"] == "UPSTREAM_ERROR"
    reply = path_of(await conversation(ann, made["id"]))[-1]
    assert (reply["content"], reply["status"]) == ("partial", "error")


async def test_a_long_reply_is_checkpointed_while_it_streams_not_written_per_chunk(
    ann: Client, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpoint clock is driven by the test (`ticks`), the upstream's pieces too (`step`):
    # no count of writes depends on how fast this machine is.
    ticks: asyncio.Queue[None] = asyncio.Queue()

    async def tick(seconds: float) -> None:
        await ticks.get()

    monkeypatch.setattr(turns, "checkpoint_due", tick)
    writes: list[str] = []
    written = threading.Event()  # set in the writer's thread, on SQLite
    real = store.checkpoint

    def counted(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        writes.append(kwargs["content"])
        written.set()

    monkeypatch.setattr(store, "checkpoint", counted)
    made = await new_conversation(ann)
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks([f"w{i} " for i in range(60)]), step=step))
    async with ann.request(
        f"/api/conversations/{made['id']}/messages",
        method="POST",
        headers={"Content-Type": "application/json"},
    ) as connection:
        await connection.send(orjson.dumps({"content": "long one", "client_id": "c-1"}))
        await connection.send_complete()
        step.release(30)  # the role chunk went first; these are w0 .. w29
        received = b""
        while b"w29" not in received:
            received += await asyncio.wait_for(connection.receive(), 30)
        assert writes == []  # 30 chunks relayed, none written on its own
        ticks.put_nowait(None)
        assert await asyncio.to_thread(written.wait, 30)
        assert writes[0] == "".join(f"w{i} " for i in range(30))
        reply = path_of(await conversation(ann, made["id"]))[-1]
        assert (reply["content"], reply["status"]) == (writes[0], "streaming")
        step.release(100)  # the rest, to the end
        while b"[DONE]" not in received and b"event: done" not in received:
            received += await asyncio.wait_for(connection.receive(), 30)
    assert len(writes) == 1  # 30 more chunks, no tick: no more checkpoints


async def test_a_reply_left_streaming_by_a_dead_process_is_interrupted_by_the_sweep(
    app: Quart, ann: Client
) -> None:
    made = await new_conversation(ann)
    await say(ann, made["id"], "hello", "c-1")
    db = app.extensions["db"]
    reply_id = (await conversation(ann, made["id"]))["leaf_id"]
    async with db.write() as connection:
        await connection.execute(
            update(messages)
            .where(messages.c.id == reply_id)
            .values(status="streaming", updated_at=now() - turns.STALE_AFTER * 2)
        )
    shown = path_of(await conversation(ann, made["id"]))[-1]
    assert shown["status"] == "interrupted"  # shown so at once, before any sweep
    await turns.housekeeping(db, purge_after=turns.STALE_AFTER)
    async with db.read() as connection:
        saved = await store.message(connection, 1, made["id"], reply_id)
    assert saved is not None and saved.status == "interrupted"
    assert saved.content == "Echo: hello"
