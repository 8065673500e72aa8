"""Conversations and their messages, in the database. Every function takes the owner: no query
can forget whose data it touches, and another owner's conversation is simply not found.

A conversation's messages form a tree (`parent_id`): regenerating a reply or editing a question
adds a sibling, and the conversation's `leaf_id` picks the path shown. A message is one row,
written when it is sent, checkpointed while a reply streams and finished once: never one blob
per conversation rewritten per message.

One function per operation, in one of two forms. Most take an `AsyncConnection` of a
`Database.read()` or `write()`. Those a turn runs -- `get`, `messages_of`, `add`, `insert_in`,
`touch`, `checkpoint`, `heartbeat`, `finish` -- take a `Tx` instead: they are plain functions
that run inside `Database.run(work)`, which on SQLite runs them in the writer's thread
(db/tx.py, db/writer.py); in a `read()` or `write()`, `db.tx.run_in(connection, store.get, ...)`
runs them on that connection.

The rows they return are rows.py's; the walk of the tree is tree.py's, search is search.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import conversations, messages, now
from ..db.tx import Tx, run_in
from .rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    Conversation,
    Message,
    Summary,
    conversation_from,
    message_from,
    new_id,
    new_message,
    usage_columns,
    written,
)

PAGE_SIZE = 50


class Stale(Exception):
    """A change was made against an older revision of the conversation."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"the conversation is at revision {revision}")
        self.revision = revision


def _mine(owner_id: int) -> Any:
    return and_(conversations.c.owner_id == owner_id, conversations.c.deleted_at.is_(None))


# The statements every turn runs, built once with bound parameters: building a statement and
# its cache key costs SQLAlchemy more CPU than SQLite takes to run it (~120 us against ~100 us
# for a one-row SELECT by key). `owner` is among the parameters of each; none is named after a
# column, which an UPDATE would take as a value to set.
_MINE = and_(conversations.c.owner_id == bindparam("owner"), conversations.c.deleted_at.is_(None))
_GET = select(*CONVERSATION_COLUMNS).where(_MINE, conversations.c.id == bindparam("key"))
_TREE = (
    select(*MESSAGE_COLUMNS)
    .join(conversations, conversations.c.id == messages.c.conversation_id)
    .where(_MINE, messages.c.conversation_id == bindparam("key"))
    .order_by(messages.c.created_at, messages.c.id)
)
_INSERT = insert(messages)
_TOUCH = (
    update(conversations)
    .where(_MINE, conversations.c.id == bindparam("key"))
    .values(
        leaf_id=bindparam("new_leaf_id"),
        title=func.coalesce(bindparam("new_title"), conversations.c.title),
        revision=conversations.c.revision + 1,
        updated_at=bindparam("at"),
        changed_at=bindparam("at"),
    )
)
# Correlated, so that it is one look-up by key: `conversation_id IN (SELECT id ... WHERE owner)`
# had SQLite list all the owner's conversations (10,000 in the bench) for every checkpoint.
_OWNED_MESSAGE = and_(
    messages.c.id == bindparam("key"),
    select(conversations.c.id)
    .where(conversations.c.id == messages.c.conversation_id, _MINE)
    .exists(),
)
_FINISH = (
    update(messages)
    .where(_OWNED_MESSAGE)
    .values(
        content=bindparam("new_content"),
        status=bindparam("new_status"),
        model=bindparam("new_model"),
        finish_reason=bindparam("new_finish_reason"),
        error=bindparam("new_error", type_=messages.c.error.type),
        prompt_tokens=bindparam("new_prompt_tokens"),
        completion_tokens=bindparam("new_completion_tokens"),
        total_tokens=bindparam("new_total_tokens"),
        updated_at=bindparam("at"),
    )
)
_CHECKPOINT = (
    update(messages)
    .where(_OWNED_MESSAGE, messages.c.status == "streaming")
    .values(content=bindparam("new_content"), updated_at=bindparam("at"))
)
_STOP = (
    update(messages)
    .where(_OWNED_MESSAGE, messages.c.status == "streaming")
    .values(status="stopped", updated_at=bindparam("at"))
)
_HEARTBEAT = (
    update(messages)
    .where(_OWNED_MESSAGE, messages.c.status == "streaming")
    .values(updated_at=bindparam("at"))
)


# -- conversations -------------------------------------------------------------------------------


async def page(
    connection: AsyncConnection,
    owner_id: int,
    *,
    before: tuple[datetime, str] | None = None,
    limit: int = PAGE_SIZE,
) -> list[Summary]:
    """The owner's conversations, most recently updated first, `limit` after the `before` key."""
    query = select(
        conversations.c.id,
        conversations.c.title,
        conversations.c.updated_at,
        conversations.c.pinned,
        conversations.c.archived,
    ).where(_mine(owner_id))
    if before is not None:
        # One row-value comparison, which both databases take as a range of the sidebar index
        # (SQLite filtered an `a < x OR (a = x AND b < y)` row by row from the newest).
        key = tuple_(conversations.c.updated_at, conversations.c.id)
        query = query.where(key < before)
    query = query.order_by(conversations.c.updated_at.desc(), conversations.c.id.desc()).limit(
        limit
    )
    return [Summary(*row) for row in await connection.execute(query)]


async def changed_since(
    connection: AsyncConnection, owner_id: int, since: datetime, limit: int = 200
) -> list[tuple[Summary, bool, datetime]]:
    """Conversations changed after `since` (any change: `changed_at`), whether each was
    deleted, and when it changed (the feed of other devices)."""
    query = (
        select(
            conversations.c.id,
            conversations.c.title,
            conversations.c.updated_at,
            conversations.c.pinned,
            conversations.c.archived,
            conversations.c.deleted_at,
            conversations.c.changed_at,
        )
        .where(conversations.c.owner_id == owner_id, conversations.c.changed_at > since)
        .order_by(conversations.c.changed_at)
        .limit(limit)
    )
    return [
        (Summary(*row[:5]), row[5] is not None, row[6]) for row in await connection.execute(query)
    ]


async def create(
    connection: AsyncConnection,
    owner_id: int,
    *,
    title: str,
    settings: dict[str, Any],
    client_id: str | None = None,
    created_at: datetime | None = None,
) -> Conversation:
    at = created_at or now()
    result = await connection.execute(
        insert(conversations)
        .values(
            id=new_id(),
            owner_id=owner_id,
            client_id=client_id,
            title=title,
            settings=settings,
            pinned=False,
            archived=False,
            revision=1,
            created_at=at,
            updated_at=at,
            changed_at=at,
        )
        .returning(*CONVERSATION_COLUMNS)
    )
    return conversation_from(result.one())


def get(tx: Tx, owner_id: int, conversation_id: str) -> Conversation | None:
    """The owner's conversation, or None (another owner's, deleted, or none)."""
    found = tx.rows(_GET, {"owner": owner_id, "key": conversation_id})
    return conversation_from(found[0]) if found else None


async def by_client_id(
    connection: AsyncConnection, owner_id: int, client_id: str
) -> Conversation | None:
    query = select(*CONVERSATION_COLUMNS).where(
        conversations.c.owner_id == owner_id, conversations.c.client_id == client_id
    )
    row = (await connection.execute(query)).first()
    return conversation_from(row) if row else None


async def change(
    connection: AsyncConnection,
    owner_id: int,
    conversation_id: str,
    *,
    revision: int | None = None,
    **values: Any,
) -> Conversation | None:
    """Change title, settings, pinned, archived or leaf_id; the revision goes up by one. The
    conversation keeps its place in the list (`updated_at`): only a turn moves it.

    With `revision`, only if the conversation is still at it (else `Stale`): a tab or device
    that saw an older version cannot overwrite a newer one.
    """
    condition = and_(_mine(owner_id), conversations.c.id == conversation_id)
    if revision is not None:
        condition = and_(condition, conversations.c.revision == revision)
    result = await connection.execute(
        update(conversations)
        .where(condition)
        .values(**values, revision=conversations.c.revision + 1, changed_at=now())
        .returning(*CONVERSATION_COLUMNS)
    )
    row = result.first()
    if row is not None:
        return conversation_from(row)
    current = await run_in(connection, get, owner_id, conversation_id)
    if current is not None and revision is not None:
        raise Stale(current.revision)
    return None


def touch(
    tx: Tx,
    owner_id: int,
    conversation_id: str,
    *,
    leaf_id: str,
    title: str | None = None,
) -> None:
    """A new turn: the conversation shows `leaf_id`, moves to the top of the list and its
    revision goes up; `title`, if given, replaces the title."""
    tx.run(
        _TOUCH,
        {
            "owner": owner_id,
            "key": conversation_id,
            "new_leaf_id": leaf_id,
            "new_title": title,
            "at": now(),
        },
    )


async def delete_soon(connection: AsyncConnection, owner_id: int, conversation_id: str) -> bool:
    """Delete: gone from every list at once, purged for good after a few minutes (Undo). Its
    `updated_at` stays, so that Undo puts it back where it was."""
    result = await connection.execute(
        update(conversations)
        .where(_mine(owner_id), conversations.c.id == conversation_id)
        .values(deleted_at=now(), changed_at=now(), revision=conversations.c.revision + 1)
    )
    return result.rowcount > 0


async def undelete(connection: AsyncConnection, owner_id: int, conversation_id: str) -> bool:
    """Undo a delete: back in the list where it was (its `updated_at` is as it was)."""
    result = await connection.execute(
        update(conversations)
        .where(
            conversations.c.owner_id == owner_id,
            conversations.c.id == conversation_id,
            conversations.c.deleted_at.is_not(None),
        )
        .values(deleted_at=None, changed_at=now(), revision=conversations.c.revision + 1)
    )
    return result.rowcount > 0


async def purge(connection: AsyncConnection, deleted_before: datetime) -> int:
    """Remove conversations deleted before `deleted_before`, with their messages (every owner:
    the housekeeping of the service itself)."""
    result = await connection.execute(
        delete(conversations).where(conversations.c.deleted_at < deleted_before)
    )
    return result.rowcount


# -- messages ----------------------------------------------------------------------------------


def messages_of(tx: Tx, owner_id: int, conversation_id: str) -> list[Message]:
    """Every message of the owner's conversation (the whole tree), oldest first."""
    return [
        message_from(row) for row in tx.rows(_TREE, {"owner": owner_id, "key": conversation_id})
    ]


async def message(
    connection: AsyncConnection, owner_id: int, conversation_id: str, message_id: str
) -> Message | None:
    query = (
        select(*MESSAGE_COLUMNS)
        .join(conversations, conversations.c.id == messages.c.conversation_id)
        .where(
            _mine(owner_id),
            messages.c.conversation_id == conversation_id,
            messages.c.id == message_id,
        )
    )
    row = (await connection.execute(query)).first()
    return message_from(row) if row else None


def add(tx: Tx, /, owner_id: int, conversation_id: str, **fields: Any) -> Message | None:
    """A message added to the owner's conversation (`fields` as `new_message` takes them); None,
    and nothing written, when the conversation is not theirs (a refusal as a value: `tx` may be
    shared with other users' works)."""
    if get(tx, owner_id, conversation_id) is None:
        return None
    (message,) = insert_in(tx, [new_message(conversation_id, **fields)])
    return message


def insert_in(tx: Tx, rows: Sequence[dict[str, Any]]) -> list[Message]:
    """New messages (rows made by `new_message`, of conversations the caller checked are the
    owner's), in one statement: a turn's question and reply's placeholder are one round trip."""
    tx.run_many(_INSERT, rows)
    return [written(row) for row in rows]


def checkpoint(tx: Tx, owner_id: int, message_id: str, content: str) -> None:
    """The text a streaming reply has so far (and a sign the reply is alive)."""
    tx.run(
        _CHECKPOINT,
        {"owner": owner_id, "key": message_id, "new_content": content, "at": now()},
    )


def heartbeat(tx: Tx, owner_id: int, message_id: str) -> None:
    """A streaming reply is alive, though it has said nothing new (the text index is spared)."""
    tx.run(_HEARTBEAT, {"owner": owner_id, "key": message_id, "at": now()})


def finish(
    tx: Tx,
    owner_id: int,
    message_id: str,
    *,
    content: str,
    status: str,
    model: str | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    counts = usage_columns(usage)
    tx.run(
        _FINISH,
        {
            "owner": owner_id,
            "key": message_id,
            "new_content": content,
            "new_status": status,
            "new_model": model,
            "new_finish_reason": finish_reason,
            "new_error": error,
            "new_prompt_tokens": counts["prompt_tokens"],
            "new_completion_tokens": counts["completion_tokens"],
            "new_total_tokens": counts["total_tokens"],
            "at": now(),
        },
    )


def stop(tx: Tx, owner_id: int, message_id: str) -> None:
    """Mark a streaming reply `stopped`: the process running it ends it when it sees this
    (runs/control.py), and saves its text; the last checkpoint's text is kept if it never does."""
    tx.run(_STOP, {"owner": owner_id, "key": message_id, "at": now()})


async def stopped_among(connection: AsyncConnection, message_ids: list[str]) -> list[str]:
    """Which of these replies, run by this process, another process has marked `stopped`.

    The service's own bookkeeping (every owner), like `interrupt_stale`: it reads ids and
    statuses of replies this process runs, never their content."""
    rows = await connection.execute(
        select(messages.c.id).where(messages.c.id.in_(message_ids), messages.c.status == "stopped")
    )
    return [row.id for row in rows]


async def interrupt_stale(connection: AsyncConnection, quiet_for: timedelta) -> int:
    """Replies still `streaming` with no checkpoint for `quiet_for`: their process died.

    The service's own housekeeping (every owner): their partial text is kept.
    """
    result = await connection.execute(
        update(messages)
        .where(messages.c.status == "streaming", messages.c.updated_at < now() - quiet_for)
        .values(status="interrupted")
    )
    return result.rowcount
