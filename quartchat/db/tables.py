"""The schema, as SQLAlchemy Core tables: one schema for SQLite and PostgreSQL.

Alembic's migrations (db/migrations/) must match these tables exactly; `alembic check` in the tests
(tests/db/test_migrations.py) fails on any drift. Secrets are never stored: sessions, API tokens,
invites and the setup token are kept as SHA-256 hashes of random values (enough for 256-bit
random secrets, and looked up by equality), passwords as argon2id hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# Constraint names fixed by convention, so migrations can name them on both dialects.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Timestamp(TypeDecorator[datetime]):
    """A UTC instant: stored without a zone (SQLite keeps none), always read back as aware UTC."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if isinstance(value, datetime) else None


def now() -> datetime:
    return datetime.now(UTC)


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # lower-cased
    Column("password_hash", String(255)),  # none for users who only arrive by a trusted header
    Column("role", String(16), nullable=False),  # admin | user
    Column("status", String(16), nullable=False),  # active | pending | disabled
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie's token
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("user_agent", String(200), nullable=False),
    Column("ip", String(64), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # shown in lists: "qc_ab12cd"
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
    Column("expires_at", Timestamp),  # none: the owner chose "no expiry"
)

invites = Table(
    "invites",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the link's token
    Column("email", String(320)),  # when set, only this address may accept it
    Column("role", String(16), nullable=False),
    Column("created_by", ForeignKey("users.id", ondelete="SET NULL")),
    Column("created_at", Timestamp, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("used_at", Timestamp),
    Column("used_by", ForeignKey("users.id", ondelete="SET NULL")),
)

setup_token = Table(
    "setup_token",
    metadata,
    Column("id", Integer, primary_key=True),  # one row, id 1
    Column("hash", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("used_at", Timestamp),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(400), primary_key=True),  # "login-ip:203.0.113.5", "login-email:…"
    Column("window_start", Timestamp, nullable=False),
    Column("count", Integer, nullable=False),
    Index("ix_rate_limits_window_start", "window_start"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(36), primary_key=True),  # a UUIDv7: sortable by creation
    Column("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(64)),  # the browser's own id, so an import is idempotent
    Column("title", String(300), nullable=False),
    Column("settings", JSON, nullable=False),  # model, system prompt, sampling
    Column("leaf_id", String(36)),  # the message at the end of the path shown
    Column("pinned", Boolean, nullable=False, default=False),
    Column("archived", Boolean, nullable=False, default=False),
    Column("revision", Integer, nullable=False, default=1),
    Column("created_at", Timestamp, nullable=False),
    # The conversation's last turn (or its creation): the sidebar's order. A rename, a restore
    # or an import does not move a conversation in the list, so they leave it alone.
    Column("updated_at", Timestamp, nullable=False),
    # Any change at all (a turn, a rename, a delete, a restore, an import shown): the change
    # feed's position for other devices. Nullable only because SQLite adds a NOT NULL column by
    # copying the table; every row has one (migration 0006, and `now` for new rows).
    Column("changed_at", Timestamp, default=now),
    Column("deleted_at", Timestamp),  # deleted: kept a few minutes for "Undo", then purged
    UniqueConstraint("owner_id", "client_id"),
)
# The sidebar's query: one owner's conversations, newest first, paged by (updated_at, id).
Index(
    "ix_conversations_sidebar",
    conversations.c.owner_id,
    conversations.c.updated_at.desc(),
    conversations.c.id.desc(),
)
# The change feed's query: one owner's conversations changed after a time.
Index("ix_conversations_changes", conversations.c.owner_id, conversations.c.changed_at)

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "conversation_id",
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("parent_id", String(36)),  # a tree: regenerating or editing makes a sibling
    Column("client_id", String(64)),  # the sender's id for it: a retried send is not a new one
    Column("role", String(16), nullable=False),  # user | assistant | system
    Column("content", Text, nullable=False),
    Column(
        "status", String(16), nullable=False
    ),  # streaming | complete | stopped | interrupted | error
    Column("model", String(256)),
    Column("finish_reason", String(64)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("total_tokens", Integer),
    Column("error", JSON),  # {code, message, request_id} when status is error
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),  # a streaming reply's last checkpoint
    Index("ix_messages_conversation", "conversation_id", "created_at"),
    UniqueConstraint("conversation_id", "client_id"),
)

# The usage ledger (usage/ledger.py). Rows name models, upstreams, routes and outcomes by a small
# number interned here, not by their strings: a raw row is about 40 bytes of data, where a
# gateway that stores strings and request bodies per row spends kilobytes.
usage_names = Table(
    "usage_names",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False, unique=True),
)

# One row per metered request, kept USAGE_RETENTION_DAYS. No text of prompts or replies. No
# primary key and no index on SQLite (its rowid is free; nothing looks rows up one by one), a
# BRIN index on PostgreSQL (a few pages for millions of rows, time-ordered by insertion): the
# row is all there is to pay for. `user_id` and `token_id` are not foreign keys: the ledger
# outlives what it counts.
usage_events = Table(
    "usage_events",
    metadata,
    Column("at", BigInteger, nullable=False),  # Unix time in milliseconds, when it began
    Column("user_id", Integer),  # none without accounts
    Column("token_id", Integer),  # the API token that asked, if any
    Column("route_id", SmallInteger, nullable=False),  # usage_names: page, api, v1.chat, ...
    Column("upstream_id", SmallInteger, nullable=False),
    Column("model_id", SmallInteger, nullable=False),
    Column("outcome_id", SmallInteger, nullable=False),  # "ok", an error code, "disconnected"
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("ttft_ms", Integer),  # none when nothing was streamed
    Column("duration_ms", Integer, nullable=False),
    Column("estimated", Boolean, nullable=False),  # tokens counted by us, not the upstream
)
Index("ix_usage_events_at", usage_events.c.at, postgresql_using="brin")

# Per user x model x day, kept for good: what the usage pages and the budgets read.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, primary_key=True),  # UTC
    Column("user_id", Integer, primary_key=True, autoincrement=False),  # 0: no accounts
    Column("model_id", SmallInteger, primary_key=True, autoincrement=False),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("estimated", Integer, nullable=False),  # requests whose tokens are our estimate
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    # Millionths of a US dollar; null while none of the day's requests had a price ("unpriced",
    # which a 0 would make "free").
    Column("cost_micros", BigInteger),
)

# What administrators set (usage/budgets.py, upstream/models.py): the models a role or a user may
# use, and their limits. `subject` is `role:user`, `role:admin` or `user:<id>`; a user's row
# overrides their role's, which overrides the settings' defaults; a null column sets nothing.
policies = Table(
    "policies",
    metadata,
    Column("subject", String(64), primary_key=True),
    Column("models", JSON),  # a list of model names; null: every model
    Column("requests_per_minute", Integer),
    Column("tokens_per_day", BigInteger),
    Column("cost_per_month_micros", BigInteger),
    Column("updated_at", Timestamp, nullable=False),
)
