"""DATA_DIR is nobody else's: made 0700 with its files 0600 even by `create_app` alone (under the
usual umask 022), and a directory an older version left open is fixed, with a warning."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from quart import Quart

from quartchat import create_app
from quartchat.__main__ import main
from quartchat.auth import users
from quartchat.config import get_settings
from quartchat.db import Database

from .conftest import make_settings

DB_FILES = ("quartchat.db", "quartchat.db-wal", "quartchat.db-shm")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def accounts_app(data_dir: Path) -> Quart:
    # No DATABASE_URL and no SECRET_KEY: the SQLite file and the generated key go to DATA_DIR.
    # No upstream runs here: its start-up check would warn, and these tests count warnings.
    return create_app(make_settings(auth_mode="accounts", data_dir=data_dir), check_upstream=False)


async def write_a_user(app: Quart) -> None:
    db: Database = app.extensions["db"]
    async with db.write() as connection:
        await users.create(connection, "someone@example.com", None)


@pytest.mark.usefixtures("umask_022")
async def test_a_new_data_dir_is_0700_and_the_database_files_0600_after_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    app = accounts_app(data_dir)
    async with app.test_app():
        await write_a_user(app)
        assert mode(data_dir) == 0o700
        # Checked while the database is open: SQLite deletes -wal and -shm at its last close.
        for name in (*DB_FILES, "secret_key"):
            assert mode(data_dir / name) == 0o600, name
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("umask_022")
async def test_an_open_data_dir_left_by_an_older_version_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "secret_key").write_text("an-older-key")
    (data_dir / "backups").mkdir()
    (data_dir / "backups" / "quartchat-before-x.db").write_bytes(b"")
    # An older version's database, still open (as by a worker that is stopping): -wal and -shm.
    older = sqlite3.connect(data_dir / "quartchat.db")
    try:
        older.execute("PRAGMA journal_mode=WAL")
        older.execute("CREATE TABLE kept (x)")
        older.commit()
        opened = [data_dir, *data_dir.rglob("*")]
        for path in opened:
            path.chmod(0o755 if path.is_dir() else 0o644)
        assert {p.name for p in opened} >= set(DB_FILES)

        app = accounts_app(data_dir)
        async with app.test_app():
            await write_a_user(app)
            for path in opened:
                assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    finally:
        older.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(data_dir) in warning and "0700" in warning for warning in warnings)


def test_quartchat_serves_and_migrates_under_umask_077(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AUTH_MODE", "accounts")
    get_settings.cache_clear()
    try:
        main(["migrate"])
    finally:
        get_settings.cache_clear()
    now = os.umask(0o022)  # reading the umask means setting it; the fixture restores the old one
    assert now == 0o077
