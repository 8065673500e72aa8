"""Conversations in and out: our JSON (the format the page exports too), Markdown, and
ChatGPT's `conversations.json`.

An import is data, never code or markup: only strings of known fields are taken, sizes and counts
are bounded, ids are the server's own (the file's ids only identify what was imported before, so
importing twice imports once), and a bad entry is skipped and reported, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..db import Database
from . import store

FORMAT = "quartchat"
VERSION = 1
MAX_CONVERSATIONS = 10_000
MAX_MESSAGES = 20_000
MAX_TITLE = 300
ROLES = ("user", "assistant", "system")
SETTINGS_KEYS = ("model", "system", "temperature", "top_p", "max_tokens")


@dataclass
class ImportedMessage:
    key: str  # the file's id for it
    parent: str | None
    role: str
    content: str
    created_at: datetime
    status: str = "complete"
    model: str | None = None


@dataclass
class ImportedConversation:
    client_id: str
    title: str
    created_at: datetime
    settings: dict[str, Any]
    messages: list[ImportedMessage] = field(default_factory=list)
    leaf: str | None = None


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


def read(document: Any) -> tuple[list[ImportedConversation], list[str]]:
    """The conversations in a parsed file (ours or ChatGPT's), and what had to be skipped."""
    problems: list[str] = []
    if isinstance(document, list):  # ChatGPT's conversations.json is a list
        entries, parse = document, _chatgpt
    elif isinstance(document, dict) and document.get("format") == FORMAT:
        if document.get("version") != VERSION:
            return [], [
                f"This file is version {document.get('version')!r}; version {VERSION} is read."
            ]
        listed = document.get("conversations")
        if not isinstance(listed, list):
            return [], ["The file has no list of conversations."]
        entries, parse = listed, _ours
    else:
        return [], ["This is neither a quartchat export nor ChatGPT's conversations.json."]
    conversations: list[ImportedConversation] = []
    for number, entry in enumerate(entries[:MAX_CONVERSATIONS], 1):
        conversation = parse(entry) if isinstance(entry, dict) else None
        if conversation is None:
            problems.append(f"Conversation {number} could not be read: skipped.")
        else:
            conversations.append(conversation)
    if len(entries) > MAX_CONVERSATIONS:
        problems.append(f"Only the first {MAX_CONVERSATIONS} conversations were read.")
    return conversations, problems


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
            )
        )
        previous = message_key
    return conversation


def _chatgpt(entry: dict[str, Any]) -> ImportedConversation | None:
    mapping = entry.get("mapping")
    key = _text(entry.get("conversation_id") or entry.get("id"), 64)
    if not isinstance(mapping, dict) or not key:
        return None
    conversation = ImportedConversation(
        client_id=f"chatgpt:{key}"[:64],
        title=_text(entry.get("title"), MAX_TITLE) or "Imported chat",
        created_at=_time(entry.get("create_time")) or datetime.now(UTC),
        settings={},
    )
    kept: dict[str, ImportedMessage] = {}

    def nearest_kept(node_id: Any) -> str | None:
        # Nodes without text (the root, system and tool nodes) are skipped: a message answers
        # the nearest ancestor that was kept.
        seen: set[str] = set()
        while isinstance(node_id, str) and node_id not in seen:
            seen.add(node_id)
            if node_id in kept:
                return node_id
            node = mapping.get(node_id)
            node_id = node.get("parent") if isinstance(node, dict) else None
        return None

    for node_id, node in list(mapping.items())[: MAX_MESSAGES * 2]:
        if not isinstance(node, dict) or not isinstance(node_id, str):
            continue
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
    for node_id, message in kept.items():
        node = mapping[node_id]
        message.parent = nearest_kept(node.get("parent"))
    conversation.messages = sorted(kept.values(), key=lambda m: m.created_at)[:MAX_MESSAGES]
    conversation.leaf = nearest_kept(entry.get("current_node"))
    return conversation


async def store_all(
    db: Database, owner_id: int, conversations: list[ImportedConversation], problems: list[str]
) -> dict[str, Any]:
    """Write what was read, one conversation per transaction; ones imported before are skipped."""
    imported = skipped = 0
    for conversation in conversations:
        try:
            async with db.write() as connection:
                if await store.by_client_id(connection, owner_id, conversation.client_id):
                    skipped += 1
                    continue
                await _store_one(connection, owner_id, conversation)
            imported += 1
        except IntegrityError:  # imported at the same moment by another request (two tabs)
            skipped += 1
    return {"imported": imported, "skipped": skipped, "problems": problems}


async def _store_one(connection: Any, owner_id: int, conversation: ImportedConversation) -> None:
    made = await store.create(
        connection,
        owner_id,
        title=conversation.title,
        settings=conversation.settings,
        client_id=conversation.client_id,
        created_at=conversation.created_at,
    )
    ids: dict[str, str] = {}
    pending = list(conversation.messages)
    # Parents before children, whatever the file's order; a message whose parent is missing
    # (or part of a cycle) hangs from the root.
    for _ in range(len(pending) + 1):
        waiting = []
        unplaced = {m.key for m in pending}
        for message in pending:
            if (
                message.parent is not None
                and message.parent not in ids
                and message.parent in unplaced
            ):
                waiting.append(message)
                continue
            saved = await store.add(
                connection,
                owner_id,
                made.id,
                role=message.role,
                content=message.content,
                parent_id=ids.get(message.parent) if message.parent else None,
                status=message.status,
                model=message.model,
                created_at=message.created_at,
            )
            ids[message.key] = saved.id
        if len(waiting) == len(pending):
            for message in waiting:
                message.parent = None
        pending = waiting
        if not pending:
            break
    leaf = ids.get(conversation.leaf or "") or (
        ids[conversation.messages[-1].key] if conversation.messages else None
    )
    await store.change(connection, owner_id, made.id, leaf_id=leaf)


def to_json(pairs: list[tuple[store.Conversation, list[store.Message]]]) -> dict[str, Any]:
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


def to_markdown(pairs: list[tuple[store.Conversation, list[store.Message]]]) -> str:
    """Each conversation's current path, readable: a heading, then who said what."""
    parts = []
    for conversation, tree in pairs:
        lines = [f"# {conversation.title}", ""]
        for message in store.path_to(tree, conversation.leaf_id):
            who = {"user": "You", "assistant": "Assistant", "system": "System"}[message.role]
            lines += [f"**{who}:**", "", message.content, ""]
        parts.append("\n".join(lines))
    return "\n---\n\n".join(parts)


def file_name(title: str, extension: str) -> str:
    """A safe download name from a title."""
    stem = re.sub(r"[^\w.-]+", "-", title, flags=re.UNICODE).strip("-.")[:60] or "conversation"
    return f"{stem}.{extension}"
