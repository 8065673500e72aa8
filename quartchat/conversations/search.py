"""Search of the owner's messages and titles, on SQLite's FTS5 index or PostgreSQL's tsvector
(one branch per dialect), and the snippets shown for the hits."""

from __future__ import annotations

import itertools
import re
from collections import deque
from typing import Any

from sqlalchemy import column, func, literal_column, select, table
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, FromClause

from ..db.tables import conversations, messages
from .rows import Hit
from .store import _mine

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
