"""tokens: API tokens expire (`api_tokens.expires_at`)

Revision ID: 0005
Revises: 0004

Tokens were immortal. A token now has an expiry its owner chooses when making it (90 days unless
they choose otherwise, or none: NULL). Tokens made before this migration get one too: 90 days
from the upgrade, not from when they were made, so that no script stops working the moment the
service is upgraded, yet no old token lives forever. Their owners see the date on the account
page and make a new token in time (or an admin revokes it from /admin). Revoked tokens keep no
expiry: they are dead already.

Downgrading drops the column: every token is immortal again.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import quartchat.db.tables
from quartchat.db.tables import Timestamp, now

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EXISTING_TOKENS_LIVE = timedelta(days=90)


def upgrade() -> None:
    op.add_column(
        "api_tokens",
        sa.Column("expires_at", quartchat.db.tables.Timestamp(), nullable=True),
    )
    # Bound through the column's own type, so both databases store the instant as tables.py does.
    tokens = sa.table("api_tokens", sa.column("expires_at", Timestamp), sa.column("revoked_at"))
    op.execute(
        tokens.update()
        .where(tokens.c.revoked_at.is_(None))
        .values(expires_at=now() + EXISTING_TOKENS_LIVE)
    )


def downgrade() -> None:
    op.drop_column("api_tokens", "expires_at")
