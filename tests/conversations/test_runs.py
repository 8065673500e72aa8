"""A reply as a run: it outlives the request that started it, readers replay and follow it by
event id, a stop ends it wherever it runs, and one conversation runs one reply at a time."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import update

from quartchat.conversations import store, turns
from quartchat.db.tables import messages, now
from quartchat.runs.control import Runs

from ..conftest import assert_error, error_event
from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .conftest import conversation, new_conversation, say

WORDS = [f"w{i} " for i in range(40)]
FULL = "".join(WORDS)


def stamped(body: bytes) -> list[tuple[str | None, str, Any]]:
    """A turn stream's events as (id, event, data); pings left out."""
    out: list[tuple[str | None, str, Any]] = []
    for block in body.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("id"), fields["event"], orjson.loads(fields["data"])))
    return out


def text_of(events: list[tuple[str | None, str, Any]]) -> str:
    return "".join(data["delta"] for _, kind, data in events if kind == "chunk")


async def reply_of(client: Client, conversation_id: str) -> dict[str, Any]:
    found = await conversation(client, conversation_id)
    return next(m for m in found["messages"] if m["id"] == found["leaf_id"])


async def settled(client: Client, conversation_id: str) -> dict[str, Any]:
    """The leaf reply once it is no longer `streaming` (its run's last write is done)."""
    for _ in range(200):
        reply = await reply_of(client, conversation_id)
        if reply["status"] != "streaming":
            return reply
        await asyncio.sleep(0.025)
    raise AssertionError("the reply is still streaming")


async def read_events(
    client: Client, conversation_id: str, reply_id: str, **how: Any
) -> tuple[int, bytes]:
    response = await client.get(
        f"/api/conversations/{conversation_id}/messages/{reply_id}/events", **how
    )
    return response.status_code, await response.get_data(as_text=False)


class Started:
    """A turn whose request is open: what it has received, and its reply's id."""

    def __init__(self, connection: Any, reply_id: str) -> None:
        self.connection = connection
        self.reply_id = reply_id
        self.received = b""

    async def until(self, marker: bytes) -> None:
        async with asyncio.timeout(10):
            while marker not in self.received:
                self.received += await self.connection.receive()


async def start_turn(client: Client, conversation_id: str, connection: Any) -> Started:
    await connection.send(orjson.dumps({"content": "go", "client_id": "c-1"}))
    await connection.send_complete()
    async with asyncio.timeout(10):
        while connection.headers is None:  # noqa: ASYNC110 - the test client has no event
            await asyncio.sleep(0.01)
    assert connection.status_code == 200
    return Started(connection, connection.headers["Quartchat-Reply-Id"])


@asynccontextmanager
async def running_turn(client: Client, conversation_id: str) -> AsyncIterator[Started]:
    """A turn whose request stays open in the block; its client hangs up when the block ends
    (also when it fails, so that a failing test does not wait for a reply that never ends)."""
    async with client.request(
        f"/api/conversations/{conversation_id}/messages",
        method="POST",
        headers={"Content-Type": "application/json"},
    ) as connection:
        try:
            yield await start_turn(client, conversation_id, connection)
        finally:
            await connection.disconnect()


@asynccontextmanager
async def hanging_turn(
    client: Client, fake: FakeUpstream, said: str = "so far"
) -> AsyncIterator[tuple[str, Started]]:
    """A new conversation and a turn whose reply says `said`, then waits for ever (its run goes
    on until it is stopped): the conversation's id and the turn, once `said` arrived."""
    made = await new_conversation(client)
    fake.reply_with(Reply(chunks=completion_chunks([said])[:2], hang=True))
    async with running_turn(client, made["id"]) as turn:
        await turn.until(said.encode())
        yield made["id"], turn


async def test_every_event_has_an_id_that_says_where_in_the_reply_it_ends(ann: Client) -> None:
    made = await new_conversation(ann)
    response = await ann.post(
        f"/api/conversations/{made['id']}/messages",
        json={"content": "Hello there", "client_id": "c-1"},
    )
    events = stamped(await response.get_data(as_text=False))
    assert events[-1][1] == "done"
    length = 0
    for event_id, _, data in events[:-1]:
        length += len(data["delta"])
        assert event_id == str(length)
    assert events[-1][0] == f"{length}.end"


async def test_a_reply_goes_on_to_complete_when_its_client_leaves(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks(WORDS), step=step))
    async with running_turn(ann, made["id"]) as turn:
        step.release(3)
        await turn.until(b"w2 ")
        await turn.connection.disconnect()
    step.release(100)
    reply = await settled(ann, made["id"])
    assert (reply["content"], reply["status"]) == (FULL, "complete")
    assert fake.disconnects == []  # the upstream was read to its end, never cut


async def test_replay_after_any_id_gives_exactly_the_rest_while_it_runs_and_after(
    ann: Client, fake: FakeUpstream
) -> None:
    made = await new_conversation(ann)
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks(WORDS), step=step))
    async with running_turn(ann, made["id"]) as turn:
        # A word at a time (the role chunk went first): an event each, however busy the machine.
        for i in range(20):
            step.release()
            await turn.until(f"w{i} ".encode())
        first = stamped(turn.received)
        ids = [event_id for event_id, _, _ in first]
        # Readers that join mid-reply, from cut points the first reader was given.
        cuts = [*random.Random(7).sample(ids, 5), ids[0], ids[-1]]
        readers = [
            asyncio.ensure_future(
                read_events(ann, made["id"], turn.reply_id, headers={"Last-Event-ID": cut})
            )
            for cut in cuts
        ]
        await asyncio.sleep(0.05)
        step.release(100)
        await turn.until(b"event: done")
    whole = stamped(turn.received)
    assert text_of(whole) == FULL
    for cut, reader in zip(cuts, readers, strict=True):
        status, raw = await reader
        assert status == 200
        rest = stamped(raw)
        at = [event_id for event_id, _, _ in whole].index(cut)
        assert text_of(rest) == text_of(whole[at + 1 :])  # no gap, no duplicate
        assert [e for e, _, _ in rest][-1] == whole[-1][0]
        assert rest[-1][1] == "done"
    # After the end, from the log and then from the database (the log dropped), the same.
    for cut in random.Random(8).sample([e for e, _, _ in whole[:-1]], 5):
        _, raw = await read_events(ann, made["id"], turn.reply_id, query_string={"after": cut})
        assert cut is not None and text_of(stamped(raw)) == FULL[int(cut) :]
    _, nothing = await read_events(
        ann, made["id"], turn.reply_id, headers={"Last-Event-ID": whole[-1][0]}
    )
    assert stamped(nothing) == []


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"run_log_retention_seconds": 0}


async def test_a_finished_reply_is_answered_from_the_database_at_any_cut(
    ann: Client, app: Quart
) -> None:
    made = await new_conversation(ann)
    response, _ = await say(ann, made["id"], "Hello there", "c-1")
    reply_id = response.headers["Quartchat-Reply-Id"]
    runs: Runs = app.extensions["runs"]
    for _ in range(100):  # retention 0: the log goes at the next turn of the loop
        if not runs.log.holds(reply_id):
            break
        await asyncio.sleep(0.01)
    assert not runs.log.holds(reply_id)
    text = "Echo: Hello there"
    for cut in (0, 3, len(text)):
        status, raw = await read_events(ann, made["id"], reply_id, query_string={"after": cut})
        events = stamped(raw)
        assert status == 200 and text_of(events) == text[cut:]
        assert events[-1][:2] == (f"{len(text)}.end", "done")
        assert events[-1][2]["usage"]["total_tokens"] > 0


async def test_stop_closes_the_upstream_saves_the_text_as_stopped_and_ends_every_reader(
    ann: Client, fake: FakeUpstream
) -> None:
    async with hanging_turn(ann, fake) as (conversation_id, turn):
        other = asyncio.ensure_future(read_events(ann, conversation_id, turn.reply_id))
        await asyncio.sleep(0.05)
        response = await ann.post(
            f"/api/conversations/{conversation_id}/messages/{turn.reply_id}/stop", json={}
        )
        assert response.status_code == 200
        assert orjson.loads(await response.get_data()) == {"ok": True, "status": "stopped"}
        assert fake.disconnects  # closed before the stop answered
        await turn.until(b"event: error")
    for raw in (turn.received, (await other)[1]):
        events = stamped(raw)
        assert error_event([(k, d) for _, k, d in events])["code"] == "REPLY_STOPPED"
        assert text_of(events) == "so far"
    reply = await reply_of(ann, conversation_id)
    assert (reply["content"], reply["status"], reply["error"]) == ("so far", "stopped", None)
    again = await ann.post(
        f"/api/conversations/{conversation_id}/messages/{turn.reply_id}/stop", json={}
    )
    assert orjson.loads(await again.get_data())["status"] == "stopped"


async def test_a_stop_written_by_another_process_ends_the_run_here(
    ann: Client, app: Quart, fake: FakeUpstream
) -> None:
    async with hanging_turn(ann, fake) as (conversation_id, turn):
        # What the stop route does when the run is not in its process: the status, in the db.
        await app.extensions["db"].run(lambda tx: store.stop(tx, 1, turn.reply_id))
        await turn.until(b"event: error")
    assert await asyncio.to_thread(fake.wait_for_disconnect, 5) is not None
    reply = await settled(ann, conversation_id)
    assert (reply["content"], reply["status"]) == ("so far", "stopped")


async def test_one_reply_runs_at_a_time_per_conversation(ann: Client, fake: FakeUpstream) -> None:
    async with hanging_turn(ann, fake) as (conversation_id, turn):
        response = await ann.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"content": "b", "client_id": "c-2"},
        )
        error = assert_error(response.status_code, await response.get_data(), 409, "TURN_CONFLICT")
        assert error["details"] == [{"reply_id": turn.reply_id}]
        # The same client id again is a retry: it attaches to the running reply.
        retry = asyncio.ensure_future(
            ann.post(
                f"/api/conversations/{conversation_id}/messages",
                json={"content": "go", "client_id": "c-1"},
            )
        )
        await ann.post(
            f"/api/conversations/{conversation_id}/messages/{turn.reply_id}/stop", json={}
        )
        retried = await retry
        assert retried.headers["Quartchat-Reply-Id"] == turn.reply_id
        events = stamped(await retried.get_data(as_text=False))
        assert text_of(events) == "so far" and events[-1][2]["error"]["code"] == "REPLY_STOPPED"


async def test_another_users_reply_cannot_be_read_or_stopped(
    ann: Client, eve: Client, fake: FakeUpstream
) -> None:
    async with hanging_turn(ann, fake, "secret") as (conversation_id, turn):
        path = f"/api/conversations/{conversation_id}/messages/{turn.reply_id}"
        status, raw = await read_events(eve, conversation_id, turn.reply_id)
        assert_error(status, raw, 404, "NOT_FOUND")
        response = await eve.post(f"{path}/stop", json={})
        assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")
        assert fake.disconnects == []
        await ann.post(f"{path}/stop", json={})


async def test_a_resume_id_we_never_gave_is_a_clear_400(ann: Client) -> None:
    made = await new_conversation(ann)
    response, _ = await say(ann, made["id"], "hi", "c-1")
    reply_id = response.headers["Quartchat-Reply-Id"]
    status, raw = await read_events(ann, made["id"], reply_id, headers={"Last-Event-ID": "x1"})
    assert_error(status, raw, 400, "INVALID_REQUEST")
    question_id = response.headers["Quartchat-Message-Id"]
    status, raw = await read_events(ann, made["id"], question_id)
    assert_error(status, raw, 404, "NOT_FOUND")  # a question has no events


async def as_left_by_another_process(app: Quart, reply_id: str, content: str, **late: Any) -> None:
    """Make a saved reply look like one another process is running (or ran, `late`)."""
    db = app.extensions["db"]
    await db.run(lambda tx: store.finish(tx, 1, reply_id, content="", status="streaming"))
    await db.run(lambda tx: store.checkpoint(tx, 1, reply_id, content=content))
    if late:
        async with db.write() as connection:
            await connection.execute(
                update(messages).where(messages.c.id == reply_id).values(**late)
            )


async def answered(client: Client) -> tuple[str, str]:
    """A new conversation with one turn, its reply complete: their ids."""
    made = await new_conversation(client)
    response, _ = await say(client, made["id"], "hi", "c-1")
    return made["id"], response.headers["Quartchat-Reply-Id"]


async def test_a_reader_follows_a_reply_run_by_another_process_from_the_database(
    ann: Client, app: Quart
) -> None:
    conversation_id, reply_id = await answered(ann)
    await as_left_by_another_process(app, reply_id, "Part one")  # not in this process's log
    db = app.extensions["db"]
    runs: Runs = app.extensions["runs"]
    runs.poll_seconds = 0.1
    reader = asyncio.ensure_future(read_events(ann, conversation_id, reply_id))
    await asyncio.sleep(0.3)
    await db.run(lambda tx: store.checkpoint(tx, 1, reply_id, content="Part one, two"))
    await asyncio.sleep(0.3)
    await db.run(
        lambda tx: store.finish(tx, 1, reply_id, content="Part one, two, end", status="complete")
    )
    events = stamped((await asyncio.wait_for(reader, 10))[1])
    assert text_of(events) == "Part one, two, end"
    assert [e for e, _, _ in events] == ["8", "13", "18", "18.end"]


async def test_a_stop_for_a_reply_run_elsewhere_is_written_for_its_process(
    ann: Client, app: Quart
) -> None:
    conversation_id, reply_id = await answered(ann)
    await as_left_by_another_process(app, reply_id, "Part")
    stop = await ann.post(f"/api/conversations/{conversation_id}/messages/{reply_id}/stop", json={})
    assert orjson.loads(await stop.get_data()) == {"ok": True, "status": "stopped"}
    reply = await reply_of(ann, conversation_id)
    assert (reply["content"], reply["status"]) == ("Part", "stopped")


async def test_a_reader_of_a_reply_whose_process_died_gets_the_text_and_interrupted(
    ann: Client, app: Quart
) -> None:
    conversation_id, reply_id = await answered(ann)
    runs: Runs = app.extensions["runs"]
    gone = now() - timedelta(seconds=runs.stale_seconds + 1)
    await as_left_by_another_process(app, reply_id, "Part one", updated_at=gone)
    _, raw = await asyncio.wait_for(read_events(ann, conversation_id, reply_id), 10)
    events = stamped(raw)
    assert text_of(events) == "Part one"
    assert events[-1][0] == "8.end" and events[-1][2]["error"]["code"] == "REPLY_INTERRUPTED"


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        ("stopped", None, "REPLY_STOPPED"),
        ("interrupted", None, "REPLY_INTERRUPTED"),
        ("error", {"code": "UPSTREAM_ERROR", "message": "It broke."}, "UPSTREAM_ERROR"),
    ],
)
async def test_a_reply_that_ended_otherwise_is_read_with_its_end(
    ann: Client, app: Quart, status: str, error: dict[str, str] | None, code: str
) -> None:
    conversation_id, reply_id = await answered(ann)
    await app.extensions["db"].run(
        lambda tx: store.finish(tx, 1, reply_id, content="So far", status=status, error=error)
    )
    _, raw = await read_events(ann, conversation_id, reply_id, query_string={"after": "2"})
    events = stamped(raw)
    assert text_of(events) == " far"
    assert events[-1][0] == "6.end" and events[-1][2]["error"]["code"] == code


async def test_a_complete_reply_read_later_ends_with_its_saved_envelope(ann: Client) -> None:
    made = await new_conversation(ann, settings={"model": "fake-small"})
    response, live = await say(ann, made["id"], "hi", "c-1")
    reply_id = response.headers["Quartchat-Reply-Id"]
    await settled(ann, made["id"])
    _, raw = await read_events(ann, made["id"], reply_id, query_string={"after": "0"})
    saved = stamped(raw)[-1][2]
    done = live[-1][1]
    assert {k: saved[k] for k in ("model", "message", "finish_reason", "usage")} == {
        k: done[k] for k in ("model", "message", "finish_reason", "usage")
    }


async def test_a_run_checkpoints_at_the_interval_its_runs_were_given(
    ann: Client, app: Quart, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app picks the interval (1 s with several workers and no Redis: tests/runs/
    # test_wiring.py); this is the rest of the way, to the reply's writer.
    asked: list[float] = []

    async def due(seconds: float) -> None:
        asked.append(seconds)
        await asyncio.Event().wait()  # no checkpoint: the run ends first

    monkeypatch.setattr(turns, "checkpoint_due", due)
    runs: Runs = app.extensions["runs"]
    runs.checkpoint_seconds = 1.0
    async with hanging_turn(ann, fake) as (conversation_id, turn):
        async with asyncio.timeout(10):
            while not asked:  # noqa: ASYNC110 - the checkpoint task's first step
                await asyncio.sleep(0.01)
        path = f"/api/conversations/{conversation_id}/messages/{turn.reply_id}/stop"
        await ann.post(path, json={})
    assert asked == [1.0]
