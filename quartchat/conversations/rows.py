"""The rows of conversations and messages as the code sees them: frozen dataclasses, their
public (JSON) forms, the columns they are read from, the row of a new message, and the ids.

Plain data, no queries: store.py reads and writes these, search.py makes `Hit`s, turns.py and
transfer.py build on them.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from ..db.tables import conversations, messages, now

STATUSES = ("streaming", "complete", "stopped", "interrupted", "error")


def new_id() -> str:
    """A UUIDv7: unique, and sorting by it sorts by creation time."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | (0x7 << 76) | (int.from_bytes(os.urandom(10)) & ((1 << 76) - 1))
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the RFC 4122 variant
    return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class Summary:
    id: str
    title: str
    updated_at: datetime
    pinned: bool
    archived: bool

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "updated_at": self.updated_at.isoformat(),
            "pinned": self.pinned,
            "archived": self.archived,
        }


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    title: str
    settings: dict[str, Any]
    leaf_id: str | None
    pinned: bool
    archived: bool
    revision: int
    created_at: datetime
    updated_at: datetime
    client_id: str | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "settings": self.settings,
            "leaf_id": self.leaf_id,
            "pinned": self.pinned,
            "archived": self.archived,
            "revision": self.revision,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    parent_id: str | None
    role: str
    content: str
    status: str
    model: str | None
    finish_reason: str | None
    usage: dict[str, int] | None
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    client_id: str | None = field(default=None)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "client_id": self.client_id,
        }


CONVERSATION_COLUMNS = (
    conversations.c.id,
    conversations.c.title,
    conversations.c.settings,
    conversations.c.leaf_id,
    conversations.c.pinned,
    conversations.c.archived,
    conversations.c.revision,
    conversations.c.created_at,
    conversations.c.updated_at,
    conversations.c.client_id,
)
MESSAGE_COLUMNS = (
    messages.c.id,
    messages.c.conversation_id,
    messages.c.parent_id,
    messages.c.role,
    messages.c.content,
    messages.c.status,
    messages.c.model,
    messages.c.finish_reason,
    messages.c.prompt_tokens,
    messages.c.completion_tokens,
    messages.c.total_tokens,
    messages.c.error,
    messages.c.created_at,
    messages.c.updated_at,
    messages.c.client_id,
)


def message_from(row: Any) -> Message:
    usage = None
    if row.total_tokens is not None:
        usage = {
            "prompt_tokens": row.prompt_tokens or 0,
            "completion_tokens": row.completion_tokens or 0,
            "total_tokens": row.total_tokens,
        }
    return Message(
        row.id,
        row.conversation_id,
        row.parent_id,
        row.role,
        row.content,
        row.status,
        row.model,
        row.finish_reason,
        usage,
        row.error,
        row.created_at,
        row.updated_at,
        row.client_id,
    )


def conversation_from(row: Any) -> Conversation:
    return Conversation(*row)


def usage_columns(usage: dict[str, int] | None) -> dict[str, int | None]:
    usage = usage or {}
    return {
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }


def written(row: dict[str, Any]) -> Message:
    # Every column is in the row `new_message` made: the message is made from it, not read back.
    return message_from(SimpleNamespace(**row))


def new_message(
    conversation_id: str,
    *,
    role: str,
    content: str,
    parent_id: str | None,
    status: str = "complete",
    client_id: str | None = None,
    model: str | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    error: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """The row of a new message, with a new id."""
    at = created_at or now()
    return {
        "id": new_id(),
        "conversation_id": conversation_id,
        "parent_id": parent_id,
        "client_id": client_id,
        "role": role,
        "content": content,
        "status": status,
        "model": model,
        "finish_reason": finish_reason,
        "error": error,
        "created_at": at,
        "updated_at": at,
        **usage_columns(usage),
    }


@dataclass(frozen=True, slots=True)
class Hit:
    conversation_id: str
    title: str
    message_id: str | None
    snippet: str
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "title": self.title,
            "message_id": self.message_id,
            "snippet": self.snippet,
            "updated_at": self.updated_at.isoformat(),
        }
