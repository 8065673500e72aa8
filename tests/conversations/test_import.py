"""Imports at scale (issue 16): linear whatever the file, read off the event loop, memory bounded
by the body, written in short transactions that leave nothing half-shown, capped per request and
per user per day; a busy database is a 503, never a 500."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import pytest
import sqlalchemy.exc
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import URL

import quartchat.db
from quartchat import create_app
from quartchat.conversations import store, transfer
from quartchat.db import Database
from quartchat.db.tx import Tx
from quartchat.errors import database_busy

from ..auth.conftest import accounts_settings, log_in, make_user
from ..conftest import assert_error
from ..fake_upstream import FakeUpstream
from .conftest import body, conversation

DEADLINE = 30.0  # seconds to wait for a condition before the test fails


def ours(*conversations: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"format": "quartchat", "version": 1, "conversations": list(conversations), **top}


def reversed_chain(count: int, cid: str = "long") -> dict[str, Any]:
    """A conversation of `count` messages, each answering the one before, listed last first:
    the order that made placing parents first take a pass per message."""
    messages = [
        {
            "id": f"m{i}",
            "parentId": f"m{i - 1}" if i else None,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i}",
            "createdAt": 1_700_000_000_000 + i,
        }
        for i in range(count)
    ]
    return {"id": cid, "title": "long", "createdAt": 1_700_000_000_000, "messages": messages[::-1]}


async def post_import(client: Client, document: Any) -> Any:
    return await client.post(
        "/api/import", data=orjson.dumps(document), headers={"Content-Type": "application/json"}
    )


async def wait_for(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


# -- linear ----------------------------------------------------------------------------------


class CountingMapping(dict[str, Any]):
    """A ChatGPT mapping that counts every look-up and every node iterated."""

    steps = 0

    def get(self, key: Any, default: Any = None) -> Any:
        CountingMapping.steps += 1
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        CountingMapping.steps += 1
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        CountingMapping.steps += 1
        return super().__contains__(key)

    def items(self) -> Any:
        for pair in super().items():
            CountingMapping.steps += 1
            yield pair


def chatgpt_node(node_id: str, parent: str | None, text: str | None) -> dict[str, Any]:
    message = None
    if text is not None:
        message = {"author": {"role": "user"}, "content": {"parts": [text]}, "create_time": 1}
    return {"id": node_id, "parent": parent, "message": message}


def test_a_long_chatgpt_chain_is_read_in_linear_steps() -> None:
    # 400 kept nodes under a chain of 39,600 empty ones: a walk up the chain per kept node
    # took 400 x 39,600 look-ups.
    chain, kept = 39_600, 400
    mapping = CountingMapping()
    for i in range(kept):
        mapping[f"k{i}"] = chatgpt_node(f"k{i}", f"c{chain - 1}", f"kept {i}")
    for i in range(chain):
        mapping[f"c{i}"] = chatgpt_node(f"c{i}", f"c{i - 1}" if i else None, None)
    CountingMapping.steps = 0
    (found,), problems = transfer.read([{"id": "deep", "current_node": "k0", "mapping": mapping}])
    assert CountingMapping.steps <= 3 * (chain + kept), CountingMapping.steps
    assert problems == [] and len(found.messages) == kept
    assert all(m.parent is None for m in found.messages)  # no kept ancestor: the root


def test_nearest_kept_ancestor_walks_each_node_once() -> None:
    parents = CountingMapping({f"c{i}": f"c{i - 1}" if i else None for i in range(40_000)})
    parents["loop-a"], parents["loop-b"] = "loop-b", "loop-a"
    kept = {"c100": True}
    nearest = transfer.nearest_kept(parents, kept)
    CountingMapping.steps = 0
    answers = [nearest("c39999") for _ in range(400)]
    assert CountingMapping.steps <= 3 * 40_000, CountingMapping.steps
    assert answers == ["c100"] * 400
    assert nearest("c99") is None and nearest("loop-a") is None and nearest("gone") is None


class CountingKey(str):
    """A message id that counts the hashes and comparisons made of it."""

    steps = 0

    def __hash__(self) -> int:
        CountingKey.steps += 1
        return super().__hash__()

    def __eq__(self, other: object) -> bool:
        CountingKey.steps += 1
        return super().__eq__(other)


def test_a_reverse_ordered_file_is_placed_in_linear_steps() -> None:
    count = 12_000
    messages = [
        transfer.ImportedMessage(
            key=CountingKey(f"m{i}"),
            parent=CountingKey(f"m{i - 1}") if i else None,
            role="user",
            content="x",
            created_at=datetime.now(UTC),
        )
        for i in reversed(range(count))
    ]
    CountingKey.steps = 0
    links = transfer.parents(messages)
    assert CountingKey.steps <= 4 * count, CountingKey.steps
    assert links == [i + 1 for i in range(count - 1)] + [None]


def test_cycles_and_missing_parents_hang_from_the_root() -> None:
    def message(key: str, parent: str | None) -> transfer.ImportedMessage:
        return transfer.ImportedMessage(key, parent, "user", key, datetime.now(UTC))

    links = transfer.parents(
        [message("a", "b"), message("b", "a"), message("c", "a"), message("d", "gone")]
    )
    # a and b answer each other: the link that closes the loop is cut, and a hangs from the root.
    assert links == [None, 0, 0, None]


# -- off the loop, bounded memory ---------------------------------------------------------------


async def test_the_event_loop_runs_while_an_import_is_read(
    ann: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    answered: list[bool] = []
    read = transfer._chatgpt

    def reading(entry: dict[str, Any]) -> transfer.ImportedConversation | None:
        # The loop answers a callback while a conversation is being read: reading is not on it.
        ran = threading.Event()
        loop.call_soon_threadsafe(ran.set)
        answered.append(ran.wait(timeout=5))
        return read(entry)

    monkeypatch.setattr(transfer, "_chatgpt", reading)
    mapping = {f"n{i}": chatgpt_node(f"n{i}", f"n{i - 1}" if i else None, "hi") for i in range(50)}
    response = await post_import(
        ann, [{"id": "c1", "mapping": mapping}, {"id": "c2", "mapping": {}}]
    )
    assert response.status_code == 200, await response.get_data()
    assert answered == [True, True]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_twenty_megabytes_of_empty_objects_stay_within_three_times_the_body(
    ann: Client,
) -> None:
    raw = b"[" + b",".join([b"{}"] * (20 * 1024 * 1024 // 3)) + b"]"
    tracemalloc.start()
    try:
        response = await ann.post(
            "/api/import", data=raw, headers={"Content-Type": "application/json"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(raw), f"peak {peak / 2**20:.0f} MiB for a {len(raw) / 2**20:.0f} MiB body"
    assert response.status_code == 200, await response.get_data()
    result = await body(response)
    assert result["imported"] == 0
    assert len(result["problems"]) == transfer.MAX_PROBLEMS + 1  # and "… and N more."


async def test_keys_in_any_order_and_a_cut_file_are_read_as_before(ann: Client) -> None:
    shuffled = {"conversations": [reversed_chain(3, "c1")], "version": 1, "format": "quartchat"}
    assert (await body(await post_import(ann, shuffled)))["imported"] == 1
    cut = orjson.dumps(ours(reversed_chain(3, "c2")))[:-20]
    response = await ann.post("/api/import", data=cut, headers={"Content-Type": "application/json"})
    assert_error(response.status_code, await response.get_data(), 400, "INVALID_REQUEST")
    assert len((await body(await ann.get("/api/conversations")))["items"]) == 1


async def test_any_json_number_is_read_integers_past_64_bits_and_fractions_alike(
    ann: Client,
) -> None:
    # JSON numbers have no size limit; a parser mode that refused an integer past 64 bits
    # called the whole file "not JSON" (schemathesis found it on a ChatGPT-shaped list).
    entry = reversed_chain(2, "big")
    entry["createdAt"] = 1_700_000_000_500.25  # a fraction: read as a number, not skipped
    entry["settings"] = {"temperature": 0.5, "max_tokens": 29434867071560953856}
    document = json.dumps(ours(entry, padding=[29434867071560953856, -(2**70), 1e300]))
    response = await ann.post(
        "/api/import", data=document, headers={"Content-Type": "application/json"}
    )
    result = await body(response)
    assert (result["imported"], result["skipped"]) == (1, 0)
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    found = await conversation(ann, listed["id"])
    assert found["settings"] == {"temperature": 0.5}  # the oversized max_tokens is dropped
    assert found["created_at"].startswith("2023-11-14T22:13:20.500")


# -- bounded transactions ---------------------------------------------------------------------


class Paused:
    """Holds an import between two of its transactions, from its `stop`-th batch on."""

    def __init__(self, stop: int) -> None:
        self.stop = stop
        self.calls = 0
        self.reached = threading.Event()
        self.release = threading.Event()

    def wrap(self, next_batch: Any) -> Any:
        def paused(batches: transfer.Batches) -> Any:
            self.calls += 1
            if self.calls == self.stop:
                self.reached.set()
                assert self.release.wait(timeout=DEADLINE)
            return next_batch(batches)

        return paused


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Rows of messages written per transaction (keyed by the transaction's Tx)."""
    rows: dict[int, int] = {}
    keep: list[Tx] = []  # so that no Tx's id is reused by another while counting
    insert_in = store.insert_in

    def counting(tx: Tx, batch: Any) -> Any:
        keep.append(tx)
        rows[id(tx)] = rows.get(id(tx), 0) + len(batch)
        return insert_in(tx, batch)

    monkeypatch.setattr(store, "insert_in", counting)
    return rows


async def test_a_large_import_is_written_in_short_transactions_while_others_write(
    ann: Client, eve: Client, written: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 12_000
    paused = Paused(stop=3)
    monkeypatch.setattr(transfer.Batches, "next", paused.wrap(transfer.Batches.next))
    importing = asyncio.ensure_future(post_import(ann, ours(reversed_chain(count))))
    try:
        await wait_for(paused.reached.is_set, "the import's third batch")
        # Half-way, between two of the import's transactions: others write at once, and
        # the conversation is not shown yet.
        made = await eve.post("/api/conversations", json={"title": "meanwhile"})
        assert made.status_code == 201, await made.get_data()
        assert (await body(await ann.get("/api/conversations")))["items"] == []
    finally:
        paused.release.set()
    response = await importing
    assert (await body(response))["imported"] == 1
    size = transfer.MESSAGES_PER_TRANSACTION
    assert sum(written.values()) == count
    assert len(written) >= count // size and max(written.values()) <= size
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    found = await conversation(ann, listed["id"])
    by_content = {m["content"]: m for m in found["messages"]}
    assert len(by_content) == count
    for i in (1, count // 2, count - 1):
        assert by_content[f"message {i}"]["parent_id"] == by_content[f"message {i - 1}"]["id"]
    assert found["leaf_id"] == by_content["message 0"]["id"]  # the file's last message


async def test_an_import_waits_between_its_transactions_for_a_write_that_is_waiting(
    app: Quart, ann: Client, written: dict[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite a write polls for the lock with sleeps of up to 100 ms, and an import taking it
    # back at once would win every time: the import must let a waiting write go first.
    db: Database = app.extensions["db"]
    turns: list[int] = []
    writers_first = db.writers_first

    async def asked() -> None:
        turns.append(sum(written.values()))
        await writers_first()

    monkeypatch.setattr(db, "writers_first", asked)
    paused = Paused(stop=2)
    monkeypatch.setattr(transfer.Batches, "next", paused.wrap(transfer.Batches.next))
    importing = asyncio.ensure_future(post_import(ann, ours(reversed_chain(3_000))))
    try:
        await wait_for(paused.reached.is_set, "the import's second batch")
        async with db.write():
            paused.release.set()
            await wait_for(lambda: len(turns) == 2, "the import to ask for its second turn")
            for _ in range(20):  # the import had every chance to write its batch: it must not
                await asyncio.sleep(0.01)
            assert sum(written.values()) == turns[1]
    finally:
        paused.release.set()
    assert (await body(await importing))["imported"] == 1
    assert sum(written.values()) == 3_000


async def test_an_import_that_dies_half_way_shows_nothing_and_imports_again(
    ann: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_batch = transfer.Batches.next
    calls = 0

    def dying(batches: transfer.Batches) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the worker died")
        return next_batch(batches)

    monkeypatch.setattr(transfer.Batches, "next", dying)
    failed = await post_import(ann, ours(reversed_chain(1_500)))
    assert_error(failed.status_code, await failed.get_data(), 500, "INTERNAL_ERROR")
    assert (await body(await ann.get("/api/conversations")))["items"] == []
    monkeypatch.setattr(transfer.Batches, "next", next_batch)
    again = await body(await post_import(ann, ours(reversed_chain(1_500))))
    assert (again["imported"], again["skipped"]) == (1, 0)
    (listed,) = (await body(await ann.get("/api/conversations")))["items"]
    assert len((await conversation(ann, listed["id"]))["messages"]) == 1_500


async def test_small_conversations_share_transactions(
    ann: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = 0
    run, write = Database.run, Database.write

    def counted(method: Any) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal transactions
            transactions += 1
            return method(*args, **kwargs)

        return counting

    monkeypatch.setattr(Database, "run", counted(run))
    monkeypatch.setattr(Database, "write", counted(write))
    document = ours(*(reversed_chain(2, f"c{i}") for i in range(300)))
    result = await body(await post_import(ann, document))
    assert result["imported"] == 300
    assert transactions < 10  # not one per conversation (nor one per message)
    again = await body(await post_import(ann, document))
    assert (again["imported"], again["skipped"]) == (0, 300)


# -- caps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings_overrides", [{"import_max_bytes": 4_000, "import_bytes_per_day": 10_000}]
)
async def test_imports_are_capped_per_request_and_per_user_per_day(
    ann: Client, eve: Client
) -> None:
    document = ours(*(reversed_chain(2, f"c{i}") for i in range(14)))
    size = len(orjson.dumps(document))
    assert 3_000 < size < 4_000
    too_big = await post_import(ann, ours(*(reversed_chain(2, f"c{i}") for i in range(20))))
    error = assert_error(too_big.status_code, await too_big.get_data(), 413, "REQUEST_TOO_LARGE")
    assert "4000" in error["message"]
    for _ in range(2):
        assert (await post_import(ann, document)).status_code == 200
    refused = await post_import(ann, document)  # 3 x 3,500 > 10,000
    assert_error(refused.status_code, await refused.get_data(), 429, "IMPORT_QUOTA_EXCEEDED")
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    small = ours(reversed_chain(2, "small"))  # a refused import was not counted
    assert (await post_import(ann, small)).status_code == 200
    assert (await post_import(eve, document)).status_code == 200  # per user


# -- a busy database -------------------------------------------------------------------------


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    pragmas = tuple(
        "PRAGMA busy_timeout=100" if p.startswith("PRAGMA busy_timeout") else p
        for p in quartchat.db.SQLITE_PRAGMAS
    )
    monkeypatch.setattr(quartchat.db, "SQLITE_PRAGMAS", pragmas)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_locked_database_is_a_503_with_retry_after_not_a_500(
    short_busy_timeout: None, database: URL, tmp_path: Path, fake: FakeUpstream
) -> None:
    app = create_app(accounts_settings(database, tmp_path, openai_api_base=fake.url))
    async with app.test_app():
        await make_user(app, "ann@example.com")
        client = app.test_client()
        await log_in(client, "ann@example.com")
        holder = sqlite3.connect(str(database.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            for response in (
                await client.post("/api/conversations", json={"title": "blocked"}),
                await post_import(client, ours(reversed_chain(2))),
            ):
                assert_error(response.status_code, await response.get_data(), 503, "DATABASE_BUSY")
                assert response.headers["Retry-After"] == "1"
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_the_busy_errors_of_each_database_are_busy(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        writer.execute("BEGIN IMMEDIATE")  # what the writer thread raises, unwrapped
    holder.execute("ROLLBACK")
    wrapped = sqlalchemy.exc.OperationalError("BEGIN", {}, locked.value)
    assert database_busy(locked.value) and database_busy(wrapped)
    assert database_busy(asyncpg.exceptions.LockNotAvailableError("lock timeout"))
    assert database_busy(asyncpg.exceptions.TooManyConnectionsError("too many clients"))
    assert database_busy(sqlalchemy.exc.TimeoutError("QueuePool limit reached"))
    assert not database_busy(sqlite3.OperationalError("no such table: x"))
    assert not database_busy(asyncpg.exceptions.UniqueViolationError("duplicate"))
