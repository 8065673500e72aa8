"""conversations: the change feed gets its own time (`conversations.changed_at`)

Revision ID: 0006
Revises: 0005

`updated_at` was both the sidebar's order and the change feed's position, so every change moved
a conversation to the top: a rename, an undone delete, an import (dated "now"). It is now the
time of the last turn only (the order), and `changed_at` the time of any change (the feed that
other devices poll). Existing conversations start with `changed_at = updated_at`: nothing
changed since then that the feed has not already sent.

The column is nullable because SQLite adds a NOT NULL column by copying the table; every row
has a value.

Downgrading drops the column and its index: the feed reads `updated_at` again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import quartchat.db.tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "conversations",
        sa.Column("changed_at", quartchat.db.tables.Timestamp(), nullable=True),
    )
    conversations = sa.table("conversations", sa.column("changed_at"), sa.column("updated_at"))
    op.execute(conversations.update().values(changed_at=conversations.c.updated_at))
    op.create_index(
        "ix_conversations_changes", "conversations", ["owner_id", "changed_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_changes", table_name="conversations")
    op.drop_column("conversations", "changed_at")
