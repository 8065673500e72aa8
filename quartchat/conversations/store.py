"""Conversations and their messages, in the database. Every function takes the owner: no query
can forget whose data it touches, and another owner's conversation is simply not found.

A conversation's messages form a tree (`parent_id`): regenerating a reply or editing a question
adds a sibling, and the conversation's `leaf_id` picks the path shown. A message is one row,
written when it is sent, checkpointed while a reply streams and finished once: never one blob
per conversation rewritten per message.

Most functions take an `AsyncConnection` of a `Database.read()` or `write()`. The writes of a
turn -- `get_in`, `messages_in`, `add_in` (the `_in` forms of `get`, `messages_of`, `add`),
`touch`, `checkpoint`, `heartbeat`, `finish` -- take a `Tx` instead: they are plain functions
that run inside `Database.run(work)`, which on SQLite runs them in the writer's thread
(db/tx.py, db/writer.py).
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, FromClause

from ..db.tables import conversations, messages, now
from ..db.tx import Tx
from .rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    Conversation,
    Hit,
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


async def get(
    connection: AsyncConnection, owner_id: int, conversation_id: str
) -> Conversation | None:
    found = await connection.execute(_GET, {"owner": owner_id, "key": conversation_id})
    row = found.first()
    return conversation_from(row) if row else None


def get_in(tx: Tx, owner_id: int, conversation_id: str) -> Conversation | None:
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
    current = await get(connection, owner_id, conversation_id)
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


async def messages_of(
    connection: AsyncConnection, owner_id: int, conversation_id: str
) -> list[Message]:
    """Every message of the owner's conversation (the whole tree), oldest first."""
    rows = await connection.execute(_TREE, {"owner": owner_id, "key": conversation_id})
    return [message_from(row) for row in rows]


def messages_in(tx: Tx, owner_id: int, conversation_id: str) -> list[Message]:
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


async def add(
    connection: AsyncConnection,
    owner_id: int,
    conversation_id: str,
    **fields: Any,
) -> Message:
    """Add a message to the owner's conversation (the caller checked it is theirs: `get`);
    `fields` as `new_message` takes them."""
    row = new_message(conversation_id, **fields)
    await connection.execute(_INSERT, row)
    return written(row)


def add_in(tx: Tx, owner_id: int, conversation_id: str, **fields: Any) -> Message:
    """`add`, in a `Database.run` transaction."""
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


# -- search --------------------------------------------------------------------------------------

WORD = re.compile(r"\w+", re.UNICODE)
# SQLite's full-text index (migration 0002), for queries only.
MESSAGES_FTS = table("messages_fts", column("rowid"), column("content"))
# PostgreSQL's: each message's words, stored with it, under a GIN index (migration 0004).
SEARCH_VECTOR: ColumnElement[Any] = literal_column("messages.search_vector")
MAX_TERMS = 16
MAX_TERM_LENGTH = 64
# The last word is a prefix from this many characters on: a shorter prefix matches so many words
# that the index must merge them all (a search for "t*" read every message).
PREFIX_FROM = 3
RECENT = 1000  # PostgreSQL: the newest messages looked at before the index (see below)
SNIPPET_SCAN = 20_000  # characters of a hit searched for its snippet


def search_terms(query: str) -> list[str]:
    """The words of a search, nothing else: quotes, operators, `*` and parentheses are dropped,
    so no input can be taken as query syntax by FTS5 or tsquery."""
    return [t[:MAX_TERM_LENGTH].lower() for t in WORD.findall(query[:4000])][:MAX_TERMS]


async def search(
    connection: AsyncConnection, owner_id: int, query: str, limit: int = 20
) -> list[Hit]:
    """The owner's messages (and titles) that contain every word of `query` (the last one as a
    prefix, for search as you type, once it has `PREFIX_FROM` characters): newest messages
    first, then titles.

    The newest first because both indexes can give hits in that order and stop at `limit`: a
    word in nearly every message costs no more than a rare one (sorting every hit by its
    conversation's `updated_at` read them all: seconds at 200,000 messages). Snippets are cut
    here from the hits' text, so only `limit` messages are read for them.
    """
    terms = search_terms(query)
    if not terms:
        return []
    prefix = len(terms[-1]) >= PREFIX_FROM
    if connection.dialect.name == "sqlite":
        # Each term a quoted FTS5 string: nothing in it is syntax. FTS5 yields rowids in
        # descending order itself (rowids follow insertion), so the scan stops at `limit`.
        match = " ".join(f'"{t}"' for t in terms) + ("*" if prefix else "")
        source = MESSAGES_FTS.join(
            messages, literal_column("messages.rowid") == MESSAGES_FTS.c.rowid
        )
        rows = await _newest_hits(
            connection,
            owner_id,
            source,
            messages.c,
            literal_column("messages_fts").op("MATCH")(match),
            MESSAGES_FTS.c.rowid.desc(),
            limit,
        )
    else:
        rows = await _newest_hits_postgresql(connection, owner_id, terms, prefix, limit)
    results = [Hit(r[0], r[1], r[2], snippet(r[3], terms, prefix), r[4]) for r in rows]
    titled = await connection.execute(
        select(conversations.c.id, conversations.c.title, conversations.c.updated_at)
        .where(
            _mine(owner_id),
            *(func.lower(conversations.c.title).contains(t, autoescape=True) for t in terms),
        )
        .order_by(conversations.c.updated_at.desc())
        .limit(limit)
    )
    found_ids = {h.conversation_id for h in results}
    results += [
        Hit(r.id, r.title, None, r.title, r.updated_at) for r in titled if r.id not in found_ids
    ]
    return results[:limit]


async def _newest_hits(
    connection: AsyncConnection,
    owner_id: int,
    source: FromClause,
    message: Any,
    matches: Any,
    newest: Any,
    limit: int,
) -> list[Any]:
    """(conversation id, title, message id, content, updated_at) of the newest hits, from
    `source` whose message columns are `message`."""
    rows = await connection.execute(
        select(
            conversations.c.id,
            conversations.c.title,
            message.id,
            message.content,
            conversations.c.updated_at,
        )
        .select_from(source.join(conversations, conversations.c.id == message.conversation_id))
        .where(matches, _mine(owner_id))
        .order_by(newest)
        .limit(limit)
    )
    return list(rows)


async def _newest_hits_postgresql(
    connection: AsyncConnection, owner_id: int, terms: list[str], prefix: bool, limit: int
) -> list[Any]:
    """The newest hits on PostgreSQL, in at most two steps whose cost does not depend on what
    the planner guesses.

    The GIN index finds the rows of a word but not in any order: sorting a common word's
    hits means reading them all. Walking the messages newest first instead checks each one's
    stored vector, for ever for a rare word. The planner cannot tell the two apart (a rare word
    or prefix is estimated at 1,200 rows of 240,000 and then walked: 29 s). So: the newest
    `RECENT` messages first, which holds the newest hits of a common word; if they hold fewer
    than `limit`, the index alone.
    """
    tsquery = " & ".join([*terms[:-1], terms[-1] + (":*" if prefix else "")])
    query = func.to_tsquery(literal_column("'simple'"), tsquery)
    recent = (
        select(
            messages.c.id,
            messages.c.conversation_id,
            messages.c.content,
            SEARCH_VECTOR.label("search_vector"),
        )
        .order_by(messages.c.id.desc())
        .limit(RECENT)
        .subquery("recent")
    )
    rows = await _newest_hits(
        connection,
        owner_id,
        recent,
        recent.c,
        recent.c.search_vector.op("@@")(query),
        recent.c.id.desc(),
        limit,
    )
    if len(rows) >= limit:
        return rows
    # Only the index's bitmap: no walk of the table in id order.
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    await connection.exec_driver_sql("SET LOCAL enable_indexscan = off")
    try:
        return await _newest_hits(
            connection,
            owner_id,
            messages,
            messages.c,
            SEARCH_VECTOR.op("@@")(query),
            messages.c.id.desc(),  # a UUIDv7: creation order
            limit,
        )
    finally:
        await connection.exec_driver_sql("SET LOCAL enable_seqscan = on")
        await connection.exec_driver_sql("SET LOCAL enable_indexscan = on")


def snippet(content: str, terms: list[str], prefix: bool, words: int = 12) -> str:
    """About `words` words of `content`, from just before the first word of the search in it
    (or from the start, when it is not there as such: the index also folds diacritics)."""
    last = len(terms) - 1

    def found(word: str) -> bool:
        word = word.lower()
        return any(
            word == t or (prefix and i == last and word.startswith(t)) for i, t in enumerate(terms)
        )

    before: deque[re.Match[str]] = deque(maxlen=3)
    tokens = WORD.finditer(content, 0, SNIPPET_SCAN)
    for token in tokens:
        if found(token.group()):
            shown = [*before, token, *itertools.islice(tokens, words - len(before) - 1)]
            break
        before.append(token)
    else:
        shown = list(itertools.islice(WORD.finditer(content), words))
    if not shown:
        return ""
    start, end = shown[0].start(), shown[-1].end()
    text = " ".join(content[start:end].split())
    lead = "…" if WORD.search(content, 0, start) else ""
    return lead + text + ("…" if WORD.search(content, end) else "")
