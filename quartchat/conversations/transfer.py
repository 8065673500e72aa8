"""Conversations in and out: our JSON (the format the page exports too), Markdown, and
ChatGPT's `conversations.json`.

An import is data, never code or markup: only strings of known fields are taken, sizes and counts
are bounded, ids are the server's own (the file's ids only identify what was imported before, so
importing twice imports once), and a bad entry is skipped and reported, never fatal.

An import is linear in the size of its file, holds the event loop for no more than a hop, and
never holds the database's write lock for long (docs/conversations.md, "Export and import"):

- the file is parsed as a stream (ijson's C parser), a conversation at a time, keeping only the
  known fields: memory is the body, plus one conversation's fields;
- parsing and reading run in a worker thread, a batch of messages at a time;
- a message's parent is found through one map of the file's ids, and a ChatGPT node's nearest
  kept ancestor by a walk that remembers every node it passed (each node is walked once);
- the writes go in transactions of at most `MESSAGES_PER_TRANSACTION` rows. A conversation is
  written hidden (`deleted_at` set, no `client_id`) and shown, with its `client_id`, in the
  transaction that writes its last rows: an import that dies half-way leaves a hidden
  conversation that the housekeeping purges, and importing the file again imports it again.
"""

from __future__ import annotations

import asyncio
import collections
import io
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import ijson
from sqlalchemy import bindparam, insert, null, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..db.tables import conversations as conversations_table
from ..db.tables import now
from ..db.tx import Tx
from . import rows, store
from .tree import path_to

FORMAT = "quartchat"
VERSION = 1
MAX_CONVERSATIONS = 10_000
MAX_MESSAGES = 20_000
MAX_NODES = MAX_MESSAGES * 2  # of a ChatGPT conversation's mapping, kept or not
MAX_TITLE = 300
MAX_PROBLEMS = 100
MESSAGES_PER_TRANSACTION = 500  # rows written per transaction at most
ROLES = ("user", "assistant", "system")
SETTINGS_KEYS = ("model", "system", "temperature", "top_p", "max_tokens")

# The C parser, by name: ijson falls back to pure Python without it, 20 times slower.
_JSON = ijson.get_backend("yajl2_c")


class NotJSON(ValueError):
    """The body is not one JSON document."""


@dataclass(slots=True)
class ImportedMessage:
    key: str  # the file's id for it
    parent: str | None
    role: str
    content: str
    created_at: datetime
    status: str = "complete"
    model: str | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class ImportedConversation:
    client_id: str
    title: str
    created_at: datetime
    settings: dict[str, Any]
    messages: list[ImportedMessage] = field(default_factory=list)
    leaf: str | None = None
    updated_at: datetime | None = None  # the file's; None: its last message's time

    def last_active(self) -> datetime:
        """When it was last used, as the file says (never later than now): its place in the
        sidebar, among the owner's own conversations, is where it was in the file's."""
        at = self.updated_at or max((m.created_at for m in self.messages), default=None)
        return min(max(at or self.created_at, self.created_at), datetime.now(UTC))


def _time(value: Any) -> datetime | None:
    """A time from an epoch in seconds or milliseconds, or an ISO string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _text(value: Any, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _usage(value: Any) -> dict[str, int] | None:
    """Token counts: only the known ones, only whole numbers a column holds."""
    if not isinstance(value, dict):
        return None
    kept = {
        name: count
        for name in USAGE_KEYS
        if isinstance(count := value.get(name), int)
        and not isinstance(count, bool)
        and 0 <= count < 2**31
    }
    return kept or None


def _settings(value: Any) -> dict[str, Any]:
    """Only the known settings, only of the right types."""
    if not isinstance(value, dict):
        return {}
    kept: dict[str, Any] = {}
    if isinstance(value.get("model"), str) and value["model"]:
        kept["model"] = value["model"][:256]
    if isinstance(value.get("system"), str):
        kept["system"] = value["system"][:100_000]
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        number = value.get(name)
        if (
            isinstance(number, int | float)
            and not isinstance(number, bool)
            and low <= number <= high
        ):
            kept[name] = float(number)
    tokens = value.get("max_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool) and 0 < tokens < 2**31:
        kept["max_tokens"] = tokens
    return kept


class _Problems(list[str]):
    """What had to be skipped, the first MAX_PROBLEMS of it (and how many more)."""

    def __init__(self) -> None:
        super().__init__()
        self.more = 0

    def add(self, problem: str) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(problem)
        else:
            self.more += 1

    def listed(self) -> list[str]:
        more = [f"… and {self.more} more."] if self.more else []
        return [*self, *more]


def read(document: Any) -> tuple[list[ImportedConversation], list[str]]:
    """The conversations in a parsed file (ours or ChatGPT's), and what had to be skipped."""
    problems = _Problems()
    if isinstance(document, list):  # ChatGPT's conversations.json is a list
        entries, parse = iter(document), _chatgpt
    elif isinstance(document, dict):
        parse = _ours
        header = _header_problem(document.get("format"), document.get("version"))
        listed = document.get("conversations")
        if header is None and not isinstance(listed, list):
            header = "The file has no list of conversations."
        if header is not None or not isinstance(listed, list):
            return [], [header or NEITHER]
        entries = iter(listed)
    else:
        return [], [NEITHER]
    found = list(_each(entries, parse, problems))
    return found, problems.listed()


NEITHER = "This is neither a quartchat export nor ChatGPT's conversations.json."


def _header_problem(format_: Any, version: Any) -> str | None:
    if format_ != FORMAT:
        return NEITHER
    if version != VERSION:
        return f"This file is version {version!r}; version {VERSION} is read."
    return None


def _each(
    entries: Iterator[Any],
    parse: Callable[[dict[str, Any]], ImportedConversation | None],
    problems: _Problems,
) -> Iterator[ImportedConversation]:
    """The entries that can be read, the first MAX_CONVERSATIONS; the others go to `problems`."""
    for number, entry in enumerate(entries, 1):
        if number > MAX_CONVERSATIONS:
            problems.add(f"Only the first {MAX_CONVERSATIONS} conversations were read.")
            return
        conversation = parse(entry) if isinstance(entry, dict) else None
        if conversation is None:
            problems.add(f"Conversation {number} could not be read: skipped.")
        else:
            yield conversation


def _ours(entry: dict[str, Any]) -> ImportedConversation | None:
    key = _text(entry.get("id"), 64)
    created = _time(entry.get("createdAt")) or datetime.now(UTC)
    if not key:
        return None
    conversation = ImportedConversation(
        client_id=key,
        title=_text(entry.get("title"), MAX_TITLE) or "Imported chat",
        created_at=created,
        settings=_settings(entry.get("settings")),
        leaf=_text(entry.get("leafId"), 64),
        updated_at=_time(entry.get("updatedAt")),
    )
    raw_messages = entry.get("messages")
    if not isinstance(raw_messages, list):
        return None
    previous: str | None = None
    for raw in raw_messages[:MAX_MESSAGES]:
        if not isinstance(raw, dict):
            continue
        content, role, message_key = raw.get("content"), raw.get("role"), _text(raw.get("id"), 64)
        if not isinstance(content, str) or role not in ROLES or not message_key:
            continue
        # The page's first format had no parentId: each message answers the one before it.
        parent = raw.get("parentId", previous)
        status = raw.get("status")
        conversation.messages.append(
            ImportedMessage(
                key=message_key,
                parent=parent if isinstance(parent, str) else None,
                role=str(role),
                content=content,
                created_at=_time(raw.get("createdAt")) or created,
                status="complete" if status in (None, "done", "complete") else "interrupted",
                model=_text(raw.get("model"), 256),
                usage=_usage(raw.get("usage")),
                finish_reason=_text(raw.get("finishReason"), 64),
            )
        )
        previous = message_key
    return conversation


def _chatgpt(entry: dict[str, Any]) -> ImportedConversation | None:
    mapping = entry.get("mapping")
    key = _text(entry.get("conversation_id") or entry.get("id"), 64)
    if not isinstance(mapping, Mapping) or not key:
        return None
    conversation = ImportedConversation(
        client_id=f"chatgpt:{key}"[:64],
        title=_text(entry.get("title"), MAX_TITLE) or "Imported chat",
        created_at=_time(entry.get("create_time")) or datetime.now(UTC),
        settings={},
        updated_at=_time(entry.get("update_time")),
    )
    # One pass over the mapping: each node's parent, and the messages kept. Nodes without text
    # (the root, system and tool nodes) are skipped: a message answers the nearest ancestor
    # that was kept.
    parents: dict[str, Any] = {}
    kept: dict[str, ImportedMessage] = {}
    for node_id, node in mapping.items():
        if len(parents) == MAX_NODES:
            break
        if not isinstance(node, dict) or not isinstance(node_id, str):
            continue
        parents[node_id] = node.get("parent")
        message = node.get("message")
        if not isinstance(message, dict):
            continue
        author = message.get("author")
        role = author.get("role") if isinstance(author, dict) else None
        content = message.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if role not in ("user", "assistant") or not isinstance(parts, list):
            continue
        text = "\n".join(p for p in parts if isinstance(p, str))
        if not text.strip():
            continue
        kept[node_id] = ImportedMessage(
            key=node_id[:64],
            parent=None,
            role=str(role),
            content=text,
            created_at=_time(message.get("create_time")) or conversation.created_at,
        )
    nearest = nearest_kept(parents, kept)
    for node_id, message in kept.items():
        message.parent = nearest(parents[node_id])
    conversation.messages = sorted(kept.values(), key=lambda m: m.created_at)[:MAX_MESSAGES]
    conversation.leaf = nearest(entry.get("current_node"))
    return conversation


def nearest_kept(
    parents: Mapping[str, Any], kept: Mapping[str, Any]
) -> Callable[[Any], str | None]:
    """A function from a node id to the nearest kept node at or above it (None: the root).

    Every walk remembers its answer for each node it passed, so that all the walks together
    visit each node once: linear, where a walk per node was quadratic on a long chain. A chain
    that ends in a missing node or runs into a cycle hangs from the root.
    """
    answers: dict[str, str | None] = {}

    def nearest(node_id: Any) -> str | None:
        path: list[str] = []
        on_path: set[str] = set()
        answer: str | None = None
        while isinstance(node_id, str):
            if node_id in kept:
                answer = node_id
                break
            if node_id in answers:
                answer = answers[node_id]
                break
            if node_id in on_path or node_id not in parents:  # a cycle, or a missing node
                break
            path.append(node_id)
            on_path.add(node_id)
            node_id = parents[node_id]
        for passed in path:
            answers[passed] = answer
        return answer

    return nearest


# -- reading a body: validated, then streamed -------------------------------------------------


def check_json(raw: bytes) -> None:
    """Raise NotJSON unless `raw` is one JSON document (a pass of the C parser, keeping nothing):
    a file that is cut short or broken imports nothing, as before it streamed."""
    events = _JSON.basic_parse(io.BytesIO(raw), use_float=False)
    try:
        # In slices: a C loop over the whole file would hold the GIL (and so the event loop)
        # from start to end; between slices the interpreter can switch threads.
        while collections.deque(itertools.islice(events, _SLICE), maxlen=1):
            pass
    except ijson.JSONError:
        raise NotJSON("The file is not JSON.") from None


_SLICE = 20_000  # events: a few milliseconds of the C parser
_Events = Iterator[tuple[str, Any]]
_STARTS = ("start_map", "start_array")
_ENDS = ("end_map", "end_array")


@dataclass(frozen=True)
class _Each:
    """A JSON array, each item read as `item`: the first `limit` items count, the rest are
    skipped. Items read as None (another type than expected) are left out."""

    item: Any
    limit: int


@dataclass(frozen=True)
class _Keyed:
    """A JSON object of any keys, each value read as `value`; the first `limit` keys count."""

    value: Any
    limit: int


_SCALAR = "scalar"  # a string, number, boolean or null; a container there reads as None
_JOINED = "joined"  # an array of which only the strings count: their text, joined by newlines

# What is read of each format: anything else is skipped as it streams by, never built.
_OURS_MESSAGE = {
    **{
        name: _SCALAR
        for name in ("id", "parentId", "role", "content", "status", "createdAt", "model")
    },
    "finishReason": _SCALAR,
    "usage": dict.fromkeys(USAGE_KEYS, _SCALAR),
}
_OURS = {
    "id": _SCALAR,
    "title": _SCALAR,
    "createdAt": _SCALAR,
    "updatedAt": _SCALAR,
    "leafId": _SCALAR,
    "settings": dict.fromkeys(SETTINGS_KEYS, _SCALAR),
    "messages": _Each(_OURS_MESSAGE, MAX_MESSAGES),
}
_CHATGPT_NODE = {
    "parent": _SCALAR,
    "message": {
        "author": {"role": _SCALAR},
        "content": {"parts": _JOINED},
        "create_time": _SCALAR,
    },
}
_CHATGPT = {
    "id": _SCALAR,
    "conversation_id": _SCALAR,
    "title": _SCALAR,
    "create_time": _SCALAR,
    "update_time": _SCALAR,
    "current_node": _SCALAR,
    "mapping": _Keyed(_CHATGPT_NODE, MAX_NODES),
}


def _skip(events: _Events, event: str) -> None:
    """Pass over the value that starts with `event`."""
    if event not in _STARTS:
        return
    depth = 1
    for event, _ in events:
        if event in _STARTS:
            depth += 1
        elif event in _ENDS:
            depth -= 1
            if depth == 0:
                return


def _value(events: _Events, event: str, value: Any, spec: Any) -> Any:
    """The value that starts with (`event`, `value`), as much of it as `spec` keeps."""
    if spec == _SCALAR:
        if event in _STARTS:
            _skip(events, event)
            return None
        # Numbers with a fraction come as Decimal: yajl's float mode (use_float) refuses an
        # integer past 64 bits as a parse error, and JSON allows any.
        return float(value) if isinstance(value, Decimal) else value
    if spec == _JOINED:
        if event != "start_array":
            _skip(events, event)
            return None
        # Joined as they come: a list of many short strings would weigh ten times the file.
        text = io.StringIO()
        first = True
        for event, value in events:
            if event == "end_array":
                return [text.getvalue()] if not first else []
            if event == "string":
                text.write(value if first else "\n" + value)
                first = False
            else:
                _skip(events, event)
        return None
    if isinstance(spec, _Each):
        if event != "start_array":
            _skip(events, event)
            return None
        items: list[Any] = []
        counted = 0
        for event, value in events:
            if event == "end_array":
                return items
            counted += 1
            if counted > spec.limit:
                _skip(events, event)
                continue
            item = _value(events, event, value, spec.item)
            if item is not None:
                items.append(item)
        return None
    if event != "start_map":
        _skip(events, event)
        return None
    found: dict[str, Any] = {}
    for event, key in events:
        if event == "end_map":
            return found
        event, value = next(events)
        if isinstance(spec, _Keyed):
            wanted = spec.value if len(found) < spec.limit or key in found else None
        else:
            wanted = spec.get(key)
        if wanted is None:
            _skip(events, event)
        else:
            found[key] = _value(events, event, value, wanted)
    return None


def _items(events: _Events, spec: Any) -> Iterator[Any]:
    """The items of the array whose start was just read, one at a time."""
    for event, value in events:
        if event == "end_array":
            return
        yield _value(events, event, value, spec)


def _header(raw: bytes) -> tuple[Any, Any]:
    """The top-level `format` and `version` of our file, wherever they are among its keys
    (first, in every file we write: then this reads four events)."""
    events = _JSON.basic_parse(io.BytesIO(raw), use_float=False)
    next(events)
    found: dict[str, Any] = {}
    for event, key in events:
        if event == "end_map":
            break
        event, value = next(events)
        if key in ("format", "version") and event not in _STARTS:
            found[key] = value
            if len(found) == 2:
                break
        else:
            _skip(events, event)
    return found.get("format"), found.get("version")


def _top_conversations(events: _Events, problems: _Problems) -> Iterator[Any]:
    """The entries of our file's `conversations` list, streamed."""
    for event, key in events:
        if event == "end_map":
            break
        event, _ = next(events)
        if key == "conversations" and event == "start_array":
            yield from _items(events, _OURS)
            return
        _skip(events, event)
    problems.add("The file has no list of conversations.")


def stream(raw: bytes, problems: _Problems) -> Iterator[ImportedConversation]:
    """The conversations of a JSON body (ours or ChatGPT's), read one at a time, keeping only
    their known fields; what cannot be read goes to `problems`. `raw` passed `check_json`."""
    events = _JSON.basic_parse(io.BytesIO(raw), use_float=False)
    event, _ = next(events)
    if event == "start_array":
        yield from _each(_items(events, _CHATGPT), _chatgpt, problems)
    elif event == "start_map":
        header = _header_problem(*_header(raw))
        if header is not None:
            problems.add(header)
            return
        yield from _each(_top_conversations(events, problems), _ours, problems)
    else:
        problems.add(NEITHER)


# -- writing: hidden, in bounded transactions, then shown ---------------------------------------


def parents(messages: Sequence[ImportedMessage]) -> list[int | None]:
    """Each message's parent, as an index into `messages`: one map of the file's ids (the first
    message with an id owns it) and one walk over the parent links. A missing parent, or a
    link that closes a cycle, is cut: that message hangs from the root."""
    first: dict[str, int] = {}
    for position, message in enumerate(messages):
        first.setdefault(message.key, position)
    links: list[int | None] = [
        None if message.parent is None else first.get(message.parent) for message in messages
    ]
    # Each node is visited once: walks stop at a node an earlier walk finished.
    state = bytearray(len(messages))  # 0 not seen, 1 on the current walk, 2 finished
    for start in range(len(messages)):
        path: list[int] = []
        index: int | None = start
        while index is not None and state[index] == 0:
            state[index] = 1
            path.append(index)
            index = links[index]
        if index is not None and state[index] == 1:  # the walk came back to itself: a cycle
            links[index] = None
        for passed in path:
            state[passed] = 2
    return links


class _Plan:
    """One conversation's rows, made a batch at a time with ids chosen up front (so rows can be
    written in the file's order, whatever order its parents come in)."""

    def __init__(self, owner_id: int, conversation: ImportedConversation) -> None:
        self.conversation = conversation
        self.id = rows.new_id()
        self.ids = [rows.new_id() for _ in conversation.messages]
        self.links = parents(conversation.messages)
        self.written = 0
        self.started = False
        leaf = next(
            (i for i, m in enumerate(conversation.messages) if m.key == conversation.leaf), None
        )
        if leaf is None and self.ids:
            leaf = len(self.ids) - 1
        self.leaf_id = self.ids[leaf] if leaf is not None else None
        self.row = {
            "id": self.id,
            "owner_id": owner_id,
            "client_id": None,
            "title": conversation.title,
            "settings": conversation.settings,
            "leaf_id": None,
            "pinned": False,
            "archived": False,
            "revision": 1,
            "created_at": conversation.created_at,
            # Its place in the sidebar is its own last use, not the import: an old conversation
            # goes below current work.
            "updated_at": conversation.last_active(),
            "changed_at": None,  # set when written, as the change feed must see it when shown
            "deleted_at": None,  # set when written: hidden until its last rows are
        }

    @property
    def left(self) -> int:
        return len(self.ids) - self.written

    def rows(self, count: int) -> list[dict[str, Any]]:
        made = []
        messages = self.conversation.messages
        for index in range(self.written, self.written + count):
            message, parent = messages[index], self.links[index]
            row = rows.new_message(
                self.id,
                role=message.role,
                content=message.content,
                parent_id=None if parent is None else self.ids[parent],
                status=message.status,
                model=message.model,
                finish_reason=message.finish_reason,
                usage=message.usage,
                created_at=message.created_at,
            )
            row["id"] = self.ids[index]
            made.append(row)
        self.written += count
        return made


@dataclass(frozen=True, slots=True)
class _Piece:
    """A step of a conversation's import: "start" (its hidden row), "rows" (messages) or
    "finish" (shown, with its client id)."""

    kind: str
    plan: _Plan
    rows: list[dict[str, Any]] = field(default_factory=list)


class Batches:
    """A body's import as transactions: each `next()` (in a worker thread) reads on as far as
    the next `size` rows, statements counted as rows."""

    def __init__(self, raw: bytes, owner_id: int, size: int = MESSAGES_PER_TRANSACTION) -> None:
        self.problems = _Problems()
        self.owner_id = owner_id
        self.size = size
        self._conversations = stream(raw, self.problems)
        self._plan: _Plan | None = None
        self.skipped: set[str] = set()  # plans found imported before: nothing more is read

    def next(self) -> list[_Piece]:
        pieces: list[_Piece] = []
        room = self.size
        while room > 0:
            plan = self._plan
            if plan is None or plan.id in self.skipped:
                conversation = next(self._conversations, None)
                if conversation is None:
                    break
                plan = self._plan = _Plan(self.owner_id, conversation)
                pieces.append(_Piece("start", plan))
                room -= 1
            elif plan.left:
                count = min(room, plan.left)
                pieces.append(_Piece("rows", plan, plan.rows(count)))
                room -= count
            else:
                pieces.append(_Piece("finish", plan))
                self._plan = None
                room -= 1
        return pieces


# Imported before: a conversation of the owner's whose client id is the file's id (an import,
# or one the page made), or whose own id is (a re-import of the owner's own export). Only the
# owner's: another user's ids say nothing here.
_ALREADY = select(conversations_table.c.id).where(
    conversations_table.c.owner_id == bindparam("owner"),
    or_(
        conversations_table.c.client_id == bindparam("key"),
        conversations_table.c.id == bindparam("key"),
    ),
)
_HIDDEN = insert(conversations_table)
_THIS = (conversations_table.c.id == bindparam("key")) & (
    conversations_table.c.owner_id == bindparam("owner")
)
# Touched with every batch of its rows: the purge takes hidden conversations untouched for
# minutes (an import that died), never one that is being written.
_ALIVE = update(conversations_table).where(_THIS).values(deleted_at=bindparam("at"))
_SHOW = (
    update(conversations_table)
    .where(_THIS)
    .values(
        client_id=bindparam("new_client_id"),
        leaf_id=bindparam("new_leaf_id"),
        deleted_at=null(),
        revision=conversations_table.c.revision + 1,
        # Not `updated_at`: that is the file's (its place in the list); the feed sees it now.
        changed_at=bindparam("at"),
    )
)


def _write(owner_id: int, pieces: list[_Piece], tx: Tx) -> list[tuple[str, bool]]:
    """One transaction of an import: for each conversation finished or found imported before
    here, (its plan id, whether it was imported). A conversation imported before is a value,
    not an exception: the other conversations of the transaction go on."""
    outcomes: list[tuple[str, bool]] = []
    done: set[str] = set()
    at = now()
    for piece in pieces:
        plan = piece.plan
        if plan.id in done:
            continue
        client_id = plan.conversation.client_id
        if piece.kind == "rows":
            tx.run(_ALIVE, {"key": plan.id, "owner": owner_id, "at": at})
            store.insert_in(tx, piece.rows)
        elif tx.rows(_ALREADY, {"owner": owner_id, "key": client_id}):
            # Imported before, or by another request meanwhile (two tabs): a copy of ours that
            # was started stays hidden, for the purge.
            outcomes.append((plan.id, False))
            done.add(plan.id)
        elif piece.kind == "start":
            tx.run(_HIDDEN, {**plan.row, "deleted_at": at, "changed_at": at})
        else:
            tx.run(
                _SHOW,
                {
                    "key": plan.id,
                    "owner": owner_id,
                    "new_client_id": client_id,
                    "new_leaf_id": plan.leaf_id,
                    "at": at,
                },
            )
            outcomes.append((plan.id, True))
    return outcomes


async def _written(db: Database, owner_id: int, pieces: list[_Piece]) -> list[tuple[str, bool]]:
    """`_write` of these pieces, once more if another request showed one of their conversations
    between its check and ours (PostgreSQL, READ COMMITTED): the retry finds it, and skips it.
    On SQLite, where writers are serialised, the check cannot be overtaken."""
    attempts = 0
    while True:
        try:
            return await db.run(partial(_write, owner_id, pieces))
        except Exception as error:
            attempts += 1
            duplicate = (
                isinstance(error, IntegrityError) or getattr(error, "sqlstate", "") == "23505"
            )
            if attempts == 3 or not duplicate:
                raise


async def import_body(db: Database, owner_id: int, raw: bytes) -> dict[str, Any]:
    """Import a JSON body (ours or ChatGPT's): `{imported, skipped, problems}`. Raises NotJSON
    before writing anything if it is not JSON. Reading runs in a worker thread, writing in
    transactions of at most MESSAGES_PER_TRANSACTION rows."""
    await asyncio.to_thread(check_json, raw)
    batches = Batches(raw, owner_id)
    imported = skipped = 0
    while pieces := await asyncio.to_thread(batches.next):
        await db.writers_first()  # other users' writes between our transactions, not after
        for plan_id, ok in await _written(db, owner_id, pieces):
            if ok:
                imported += 1
            else:
                skipped += 1
                batches.skipped.add(plan_id)
    return {"imported": imported, "skipped": skipped, "problems": batches.problems.listed()}


def to_json(pairs: list[tuple[rows.Conversation, list[rows.Message]]]) -> dict[str, Any]:
    """Our format: what the page exports and imports, version 1."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exportedAt": datetime.now(UTC).isoformat(),
        "conversations": [
            {
                "id": conversation.id,
                "title": conversation.title,
                "createdAt": int(conversation.created_at.timestamp() * 1000),
                "updatedAt": int(conversation.updated_at.timestamp() * 1000),
                "settings": conversation.settings,
                "leafId": conversation.leaf_id,
                "messages": [
                    {
                        "id": m.id,
                        "parentId": m.parent_id,
                        "role": m.role,
                        "content": m.content,
                        "status": m.status,
                        "createdAt": int(m.created_at.timestamp() * 1000),
                        "model": m.model,
                        "usage": m.usage,
                        "finishReason": m.finish_reason,
                    }
                    for m in tree
                ],
            }
            for conversation, tree in pairs
        ],
    }


def to_markdown(pairs: list[tuple[rows.Conversation, list[rows.Message]]]) -> str:
    """Each conversation's current path, readable: a heading, then who said what."""
    parts = []
    for conversation, tree in pairs:
        lines = [f"# {conversation.title}", ""]
        for message in path_to(tree, conversation.leaf_id):
            who = {"user": "You", "assistant": "Assistant", "system": "System"}[message.role]
            lines += [f"**{who}:**", "", message.content, ""]
        parts.append("\n".join(lines))
    return "\n---\n\n".join(parts)


def file_name(title: str, extension: str) -> str:
    """A safe download name from a title."""
    stem = re.sub(r"[^\w.-]+", "-", title, flags=re.UNICODE).strip("-.")[:60] or "conversation"
    return f"{stem}.{extension}"
