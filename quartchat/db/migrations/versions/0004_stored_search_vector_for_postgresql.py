"""search: a stored, stripped tsvector column for PostgreSQL's full-text search

Revision ID: 0004
Revises: 0003

PostgreSQL's search was an expression GIN index on to_tsvector('simple', content). The index
finds a word's rows, but every row the search then looks at -- the newest messages it checks
first, and each hit of the index whose match is checked again -- computed to_tsvector() of the
whole text again: ~0.1 ms for a reply, so a two-word search at 240,000 messages took up to
158 ms (bench/conversations_bench.py). The vector is now stored with the row, computed once when
the text is written (which the expression index did anyway), and the GIN index is on it.
`strip()` drops the word positions: the search only ANDs words and prefixes, never phrases, and
the column is about half the size without them.

Adding a stored generated column rewrites the table once, during the migration. SQLite: nothing
to do (its FTS5 table holds its own index).
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    if not postgresql():
        return
    op.execute(
        "ALTER TABLE messages ADD COLUMN search_vector tsvector "
        "GENERATED ALWAYS AS (strip(to_tsvector('simple', content))) STORED"
    )
    op.execute("CREATE INDEX ix_messages_search_vector ON messages USING gin (search_vector)")
    op.execute("DROP INDEX ix_messages_search")


def downgrade() -> None:
    if not postgresql():
        return
    op.execute(
        "CREATE INDEX ix_messages_search ON messages USING gin (to_tsvector('simple', content))"
    )
    op.execute("DROP INDEX ix_messages_search_vector")
    op.execute("ALTER TABLE messages DROP COLUMN search_vector")
