"""Bringing the database to this code's schema, once, safely.

`quartchat` runs `migrate()` in its parent process before it forks workers; the app runs it
again while starting (a no-op at head), so `hypercorn "quartchat:create_app()"` works too. Only
one process migrates at a time: on PostgreSQL under an advisory lock (several hosts may start at
once), on SQLite inside one `BEGIN IMMEDIATE` transaction (SQLite's DDL is transactional). Before
an SQLite file is migrated, a `VACUUM INTO` copy of it is written to `DATA_DIR/backups/`. A
database at a revision this code does not know (written by a newer quartchat) is refused.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from ..datadir import create_private
from . import create_engine, is_sqlite

log = logging.getLogger("quartchat.db")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ADVISORY_LOCK = 7_020_611_823  # any constant; names quartchat's migration lock in PostgreSQL


class DatabaseTooNew(RuntimeError):
    """The database was migrated by a newer quartchat than this one."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str | None:
    """The revision this code's schema is at (None only before the first migration exists)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(url: URL, backups: Path | None = None) -> str | None:
    """Upgrade to head; return the revision the database was at before (None: it was new)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            if is_sqlite(url):
                await connection.execution_options(quartchat_write=True)
            return await connection.run_sync(_migrate, is_sqlite(url), backups)
    finally:
        await engine.dispose()


def _migrate(connection: Connection, sqlite: bool, backups: Path | None) -> str | None:
    target = head()
    if sqlite:
        # On a new file, before its first table: deleted data's pages go back to the system at
        # `PRAGMA incremental_vacuum`, so the file does not only ever grow (an older file is
        # converted after the migration). Once per start, here: it needs the write lock.
        connection.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
        # VACUUM cannot run inside a transaction: the copy is taken first, then the migration
        # takes the write lock and looks again.
        before = current_revision(connection)
        connection.rollback()
        if before is not None and before != target and backups is not None:
            _check_known(before, target)
            _backup(connection, backups, before)
    else:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK})
        connection.commit()
    try:
        with connection.begin():
            before = current_revision(connection)
            if before == target:
                return before
            if before is not None:
                _check_known(before, target)
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        log.info("database migrated from %s to %s", before or "empty", target)
        if sqlite:
            _incremental_vacuum(connection)
        return before
    finally:
        if not sqlite:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK})
            connection.commit()


def _incremental_vacuum(connection: Connection) -> None:
    """A file made before auto_vacuum was set is converted once (VACUUM rewrites it)."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA auto_vacuum")
        (mode,) = cursor.fetchone() or (2,)
        if mode != 2:
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cursor.execute("VACUUM")
    finally:
        cursor.close()


def _check_known(revision: str, target: str | None) -> None:
    script = ScriptDirectory.from_config(alembic_config())
    if revision not in {r.revision for r in script.walk_revisions()}:
        raise DatabaseTooNew(
            f"The database is at revision {revision}, which this quartchat (schema {target}) "
            "does not know: a newer version wrote it. Run that version, or restore the backup "
            "taken before the upgrade."
        )


def _backup(connection: Connection, backups: Path, revision: str) -> Path:
    """A consistent copy of the whole SQLite file (VACUUM INTO reads one snapshot)."""
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = backups / f"quartchat-{stamp}-before-{revision}.db"
    create_private(target)  # VACUUM INTO would make it 0644: it is the whole database
    # On the driver's connection: through SQLAlchemy the statement would start a transaction.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("VACUUM INTO ?", (str(target),))
    finally:
        cursor.close()
    log.info("database backed up to %s before migrating", target)
    return target
