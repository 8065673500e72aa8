"""What `quartchat` does with the database before it serves, and `quartchat create-admin`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import URL

from ..config import Settings
from ..conversations.store import interrupt_stale
from ..conversations.turns import STALE_AFTER
from ..datadir import make_private
from ..db import Database, database_url
from ..db.migrate import migrate
from . import setup, users
from .accounts import Accounts, check_password
from .passwords import Passwords
from .principal import PrincipalCache


def url_of(settings: Settings) -> URL:
    """The database's URL. When it is the SQLite file in DATA_DIR, DATA_DIR is made private
    first (created 0700, or fixed if an older version left it open to others)."""
    if not settings.database_url:
        make_private(settings.data_dir)
    return database_url(
        settings.database_url.get_secret_value() if settings.database_url else None,
        settings.data_dir,
    )


def backups(settings: Settings) -> Path:
    return settings.data_dir / "backups"


async def prepare(settings: Settings) -> str | None:
    """Migrate; make the first admin from ADMIN_EMAIL/ADMIN_PASSWORD if there is no user yet;
    else, with no user yet, issue a setup token. Returns that token (or None)."""
    url = url_of(settings)
    await migrate(url, backups(settings))
    db = Database.open(url)
    try:
        async with db.write() as connection:
            # No worker runs yet: on SQLite (one host) every reply still `streaming` belongs to
            # a process that is gone; on PostgreSQL other hosts may be streaming, so only
            # replies nobody has checkpointed lately.
            quiet = timedelta(0) if db.sqlite else STALE_AFTER
            await interrupt_stale(connection, quiet)
        accounts = Accounts(settings, db, Passwords(), PrincipalCache())
        if await accounts.first_admin_from_settings():
            return None
        async with db.write() as connection:
            return await setup.issue(connection)
    finally:
        await db.close()


async def create_admin(settings: Settings, email: str, password: str) -> users.User:
    """An admin account, made from the command line (also to regain access)."""
    check_password(password)
    url = url_of(settings)
    await migrate(url, backups(settings))
    db = Database.open(url)
    try:
        password_hash = await Passwords().hash(password)
        async with db.write() as connection:
            existing = await users.by_email(connection, email)
            if existing is not None:
                user = await users.change(
                    connection,
                    existing.id,
                    role="admin",
                    status="active",
                    password_hash=password_hash,
                )
                assert user is not None
                return user
            return await users.create(connection, email, password_hash, role="admin")
    finally:
        await db.close()
