"""search: a prefix index for SQLite's full-text search

Revision ID: 0003
Revises: 0002

Search as you type looks the last word up as a prefix. Without a prefix index FTS5 merges the
doclists of every word that starts with it, so "the*" (the, then, there, these...) read the
entries of nearly every message: 120-600 ms at 240,000 messages (bench/conversations_bench.py).
`prefix='3'` keeps those merged lists for every 3-character prefix (0.1 ms), for about half
again the index's size; search takes a word as a prefix from 3 characters on
(quartchat/conversations/search.py, PREFIX_FROM). The table is made again and filled from
`messages` ('rebuild'); its triggers (migration 0002) name it and stay as they are.
PostgreSQL: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FTS = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'"
    "{prefix})"
)


def remake(prefix: str) -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    op.execute("DROP TABLE messages_fts")
    op.execute(FTS.format(prefix=prefix))
    op.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")


def upgrade() -> None:
    remake(", prefix='3'")


def downgrade() -> None:
    remake("")
