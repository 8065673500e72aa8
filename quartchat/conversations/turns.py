"""A turn of a conversation kept on the server: what is written when, and who writes it.

Writes per turn, not per chunk: one transaction when a message is sent (the user's message, the
reply's placeholder with status `streaming`, the conversation moved to the top), a checkpoint of
the reply's text every `CHECKPOINT_SECONDS` while it streams (every second when several processes
serve without Redis: readers in the others follow these), one transaction when it ends (text,
status, usage). The server writes the reply itself, so a reply the upstream finished is kept
whatever the browser does; a client that leaves stops the upstream (as for any stream) and what
was generated is kept as `interrupted`. A process that dies leaves `streaming` rows, which stop
being checkpointed: the next start (and a sweep every minute) marks them `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from ..accesslog import AccessRecord
from ..db import Database
from ..db.tables import now
from ..db.tx import Tx
from ..errors import APIError
from ..schemas import ChatMessage, ChatRequest
from ..streaming.completion import Completion
from . import rows, store
from .rows import Conversation, Message
from .tree import path_to

log = logging.getLogger("quartchat.conversations")

CHECKPOINT_SECONDS = 3.0
# A streaming reply not checkpointed for this long belongs to a process that is gone.
STALE_AFTER = timedelta(seconds=30)
DEFAULT_TITLE = "New chat"
SETTINGS_KEYS = ("model", "temperature", "top_p", "max_tokens", "system")


def not_found(what: str = "There is no such conversation.") -> APIError:
    return APIError(404, "NOT_FOUND", what)


def title_from(text: str) -> str:
    """A title from a first message: its first line, about 60 characters at most."""
    line = " ".join(text.strip().split("\n")[0].split())
    return (line[:57].rstrip() + "…" if len(line) > 60 else line) or DEFAULT_TITLE


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn that has begun: its messages, and the request for the upstream."""

    user: Message | None  # None when regenerating
    reply: Message
    chat: ChatRequest
    replayed: bool = False  # a retried send: `reply` is the one already made


def chat_request(conversation: Conversation, path: list[Message]) -> ChatRequest:
    """The upstream request: the system prompt, the path's messages that have text, the
    conversation's model and sampling."""
    settings = conversation.settings
    history = []
    if str(settings.get("system") or "").strip():
        history.append(ChatMessage(role="system", content=str(settings["system"])))
    history += [
        ChatMessage(role=m.role, content=m.content)  # type: ignore[arg-type]
        for m in path
        if m.content and m.role in ("user", "assistant", "system")
    ]
    options = {k: settings.get(k) for k in ("temperature", "top_p", "max_tokens")}
    return ChatRequest.model_construct(
        messages=history, model=settings.get("model") or None, **options
    )


@dataclass(frozen=True, slots=True)
class Refused:
    """A work's refusal (not found, a conflict), returned rather than raised: a work that raises
    rolls back the transaction it shares with other users' works (on PostgreSQL, all of them,
    to be run again one by one: db/writer.py). Its caller raises `error` once the batch is done."""

    error: APIError


@dataclass(frozen=True, slots=True)
class _Loaded:
    """What a turn starts from: the conversation and its whole tree, by id."""

    conversation: Conversation
    tree: dict[str, Message]

    def by_client_id(self, client_id: str) -> Message | None:
        return next((m for m in self.tree.values() if m.client_id == client_id), None)

    def running(self) -> Message | None:
        """The reply running in this conversation, if any (one whose process died is not)."""
        fresh = now() - STALE_AFTER
        return next(
            (m for m in self.tree.values() if m.status == "streaming" and m.updated_at > fresh),
            None,
        )


# A turn begins in one transaction, run by `Database.run` (on SQLite, in the writer's thread:
# db/writer.py): the functions below, but for the three entry points, are its work, plain
# synchronous code. They refuse by returning `Refused`, never by raising.


def _load(tx: Tx, owner_id: int, conversation_id: str) -> _Loaded | Refused:
    # Two statements: the tree answers every later question (is the parent here, was this
    # client id sent before, what is the path) without another look at the database.
    conversation = store.get(tx, owner_id, conversation_id)
    if conversation is None:
        return Refused(not_found())
    tree = store.messages_of(tx, owner_id, conversation_id)
    return _Loaded(conversation, {m.id: m for m in tree})


async def _start(
    db: Database,
    owner_id: int,
    conversation_id: str,
    client_id: str,
    begin: Callable[[Tx, _Loaded], Turn | Refused],
) -> Turn:
    """The turn `begin` makes from the loaded conversation, in one transaction; or, when
    `client_id` was sent before (a retry after a lost connection), the turn it made then.
    Raises the APIError of a refusal, after the transaction."""

    def work(tx: Tx) -> Turn | Refused:
        loaded = _load(tx, owner_id, conversation_id)
        if isinstance(loaded, Refused):
            return loaded
        earlier = loaded.by_client_id(client_id)
        if earlier is not None:
            return _replay(loaded, earlier)
        running = loaded.running()
        if running is not None:  # one reply at a time: a second would answer a stale path
            return Refused(
                APIError(
                    409,
                    "TURN_CONFLICT",
                    "A reply is still running in this conversation: wait for it, or stop it.",
                    details=[{"reply_id": running.id}],
                )
            )
        return begin(tx, loaded)

    outcome = await db.run(work)
    if isinstance(outcome, Refused):
        raise outcome.error
    return outcome


async def send(
    db: Database,
    owner_id: int,
    conversation_id: str,
    *,
    content: str,
    client_id: str,
    parent_id: str | None,
) -> Turn:
    """The user's message and the reply's placeholder, in one transaction.

    `parent_id` defaults to the conversation's current leaf. Sending the same `client_id` again
    (a retry after a lost connection) starts nothing new: the turn already made is returned.
    """

    def begin(tx: Tx, loaded: _Loaded) -> Turn | Refused:
        parent = parent_id if parent_id is not None else loaded.conversation.leaf_id
        if parent is not None and parent not in loaded.tree:
            return Refused(
                APIError(
                    400, "INVALID_REQUEST", "The message to answer is not in this conversation."
                )
            )
        return _ask(tx, owner_id, loaded, content, parent, client_id)

    return await _start(db, owner_id, conversation_id, client_id, begin)


async def regenerate(
    db: Database, owner_id: int, conversation_id: str, message_id: str, client_id: str
) -> Turn:
    """A new reply beside `message_id` (a reply): its parent's question, answered again."""

    def begin(tx: Tx, loaded: _Loaded) -> Turn | Refused:
        old = loaded.tree.get(message_id)
        if old is None or old.role != "assistant" or old.parent_id is None:
            return Refused(not_found("There is no such reply in this conversation."))
        return _begin_reply(tx, owner_id, loaded, old.parent_id, client_id=client_id)

    return await _start(db, owner_id, conversation_id, client_id, begin)


async def edit(
    db: Database,
    owner_id: int,
    conversation_id: str,
    message_id: str,
    *,
    content: str,
    client_id: str,
) -> Turn:
    """An edited question: a new message beside `message_id` (a question), and its reply."""

    def begin(tx: Tx, loaded: _Loaded) -> Turn | Refused:
        old = loaded.tree.get(message_id)
        if old is None or old.role != "user":
            return Refused(not_found("There is no such question in this conversation."))
        return _ask(tx, owner_id, loaded, content, old.parent_id, client_id)

    return await _start(db, owner_id, conversation_id, client_id, begin)


def _ask(
    tx: Tx, owner_id: int, loaded: _Loaded, content: str, parent_id: str | None, client_id: str
) -> Turn:
    """A new question under `parent_id` (None: a first question), and its reply's placeholder."""
    question = rows.new_message(
        loaded.conversation.id, role="user", content=content, parent_id=parent_id,
        client_id=client_id,
    )  # fmt: skip
    return _begin_reply(
        tx, owner_id, loaded, question["id"], new_question=question, first=parent_id is None
    )


def _begin_reply(
    tx: Tx,
    owner_id: int,
    loaded: _Loaded,
    question_id: str,
    *,
    new_question: dict[str, Any] | None = None,
    first: bool = False,
    client_id: str | None = None,
) -> Turn:
    """The reply's placeholder under the question `question_id`: one of the tree's (a
    regenerate), or `new_question`, a row of `rows.new_message` written with it in one
    statement."""
    conversation = loaded.conversation
    reply_row = rows.new_message(
        conversation.id,
        role="assistant",
        content="",
        parent_id=question_id,
        status="streaming",
        client_id=client_id,
        model=conversation.settings.get("model") or None,
    )
    *asked, reply = store.insert_in(tx, [new_question, reply_row] if new_question else [reply_row])
    question = asked[0] if asked else loaded.tree[question_id]
    title = None
    if first and conversation.title == DEFAULT_TITLE:
        title = title_from(question.content)
    store.touch(tx, owner_id, conversation.id, leaf_id=reply.id, title=title)
    path = path_to([*loaded.tree.values(), *asked], question.id)
    return Turn(question if asked else None, reply, chat_request(conversation, path))


def _replay(loaded: _Loaded, earlier: Message) -> Turn | Refused:
    """The turn a client id already made: its question and reply, for a retried request."""
    tree = list(loaded.tree.values())
    if earlier.role == "assistant":
        reply, question = earlier, loaded.tree.get(earlier.parent_id or "")
    else:
        question = earlier
        reply = next((m for m in reversed(tree) if m.parent_id == earlier.id), None)  # type: ignore[assignment]
    if reply is None or question is None:
        return Refused(
            APIError(409, "TURN_CONFLICT", "That message was sent before, without a reply.")
        )
    return Turn(question, reply, chat_request(loaded.conversation, []), replayed=True)


async def checkpoint_due(seconds: float) -> None:
    """Return when the next checkpoint of a streaming reply is due, `seconds` after the last
    (tests drive it)."""
    await asyncio.sleep(seconds)


def status_of(error: APIError | None) -> str:
    """The saved status of a reply ended by `error`: a stop or a lost process is not an error
    of the reply (runs/control.py)."""
    code = error.code if error is not None else None
    return {"REPLY_STOPPED": "stopped", "REPLY_INTERRUPTED": "interrupted"}.get(code or "", "error")


class ReplyWriter:
    """The relay's observer for a reply kept on the server: checkpoints while it streams, the
    final write when it ends (and the access log line, which it passes everything on to)."""

    def __init__(
        self,
        db: Database,
        owner_id: int,
        reply_id: str,
        access: AccessRecord,
        *,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self.db = db
        self.owner_id = owner_id
        self.reply_id = reply_id
        self.access = access
        self.checkpoint_seconds = checkpoint_seconds
        self._checkpoints: asyncio.Task[None] | None = None

    def opened(self, upstream_status: int, completion: Completion) -> None:
        self.access.opened(upstream_status, completion)
        self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint(completion))

    def first_output(self) -> None:
        self.access.first_output()

    async def ended(self, outcome: str, completion: Completion, error: APIError | None) -> None:
        if self._checkpoints is not None:
            self._checkpoints.cancel()
        status = {"done": "complete", "disconnected": "interrupted", "shutdown": "interrupted"}
        values: dict[str, Any] = {
            "content": completion.text,
            "status": status.get(outcome) or status_of(error),
            "model": completion.model,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage,
        }
        if values["status"] == "error" and error is not None:
            values["error"] = {"code": error.code, "message": error.message}
        # Shielded: a client that left cancels this task, but what it was sent must be kept.
        await asyncio.shield(self._finish(values))
        await self.access.ended(outcome, completion, error)

    async def failed(self, error: APIError) -> None:
        """The reply ended before its stream began (the upstream refused, or it was stopped):
        the placeholder says so."""
        values: dict[str, Any] = {"content": "", "status": status_of(error)}
        if values["status"] == "error":
            values["error"] = {"code": error.code, "message": error.message}
        await asyncio.shield(self._finish(values))

    async def _finish(self, values: dict[str, Any]) -> None:
        try:
            await self.db.run(
                partial(store.finish, owner_id=self.owner_id, message_id=self.reply_id, **values)
            )
        except Exception as exc:  # the reply is lost to a database failure: say so, once
            log.error("could not save reply %s: %s", self.reply_id, type(exc).__name__)

    async def _checkpoint(self, completion: Completion) -> None:
        saved = 0
        while True:
            await checkpoint_due(self.checkpoint_seconds)
            # The text when it grew; a sign of life anyway (a model thinking is not a dead reply).
            parts = len(completion.parts)
            ids: dict[str, Any] = {"owner_id": self.owner_id, "message_id": self.reply_id}
            if parts != saved:
                work = partial(store.checkpoint, content=completion.text, **ids)
            else:
                work = partial(store.heartbeat, **ids)
            with contextlib.suppress(Exception):  # a failed checkpoint is retried at the next
                await self.db.run(work)
                saved = parts


async def housekeeping(db: Database, *, purge_after: timedelta) -> None:
    """Mark replies whose process died `interrupted`; purge conversations deleted a while ago."""
    async with db.write() as connection:
        stale = await store.interrupt_stale(connection, STALE_AFTER)
        purged = await store.purge(connection, now() - purge_after)
    if stale:
        log.info("%d replies interrupted (their process ended)", stale)
    if purged and db.sqlite:
        async with db.engine.connect() as connection:
            await connection.exec_driver_sql("PRAGMA incremental_vacuum")
            await connection.commit()
