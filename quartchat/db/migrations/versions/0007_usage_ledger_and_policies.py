"""usage: the ledger (raw rows, interned names, daily roll-ups) and administrators' policies

Revision ID: 0007
Revises: 0006

`usage_events` has no primary key (SQLite gives every row a rowid anyway; on PostgreSQL a key
would be an index as large as the rest of the row) and one BRIN index on PostgreSQL for the
retention's deletes by time. See quartchat/usage/ledger.py.

Downgrading drops the four tables: the usage recorded and the policies set are lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import quartchat.db.tables

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_names",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_names")),
        sa.UniqueConstraint("name", name=op.f("uq_usage_names_name")),
    )
    op.create_table(
        "usage_events",
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("route_id", sa.SmallInteger(), nullable=False),
        sa.Column("upstream_id", sa.SmallInteger(), nullable=False),
        sa.Column("model_id", sa.SmallInteger(), nullable=False),
        sa.Column("outcome_id", sa.SmallInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_usage_events_at", "usage_events", ["at"], unique=False, postgresql_using="brin"
    )
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("model_id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("estimated", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("day", "user_id", "model_id", name=op.f("pk_usage_daily")),
    )
    op.create_table(
        "policies",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("models", sa.JSON(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.Column("tokens_per_day", sa.BigInteger(), nullable=True),
        sa.Column("cost_per_month_micros", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", quartchat.db.tables.Timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_policies")),
    )


def downgrade() -> None:
    op.drop_table("policies")
    op.drop_table("usage_daily")
    op.drop_index("ix_usage_events_at", table_name="usage_events", postgresql_using="brin")
    op.drop_table("usage_events")
    op.drop_table("usage_names")
