"""docs/deploy.md's SQLite backup, taken while the service runs, restored into a fresh one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from ..auth.conftest import PASSWORD
from ..fake_upstream import FakeUpstream
from ..service import Service

pytestmark = pytest.mark.e2e

ADMIN = {"email": "me@example.com", "password": PASSWORD}


def test_a_backup_restored_into_a_fresh_service_has_the_user_and_the_conversations(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    env = {
        "AUTH_MODE": "accounts",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    with (
        Service(fake.url, DATA_DIR=str(live), **env) as service,
        httpx.Client(base_url=service.url) as browser,
    ):
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        made = browser.post("/api/conversations", json={"title": "worth keeping"}).json()
        body = {"content": "remember this", "client_id": "c-1"}
        browser.post(f"/api/conversations/{made['id']}/messages", json=body).read()
        # The recipe in docs/deploy.md: VACUUM INTO, while the service runs.
        with sqlite3.connect(live / "quartchat.db") as connection:
            connection.execute("VACUUM INTO ?", (str(tmp_path / "backup.db"),))
    restored.mkdir()
    shutil.copy(tmp_path / "backup.db", restored / "quartchat.db")
    shutil.copy(live / "secret_key", restored / "secret_key")
    with (
        Service(fake.url, DATA_DIR=str(restored), AUTH_MODE="accounts") as fresh,
        httpx.Client(base_url=fresh.url) as browser,
    ):
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
        listed = browser.get("/api/conversations").json()["items"]
        assert [c["title"] for c in listed] == ["worth keeping"]
        found = browser.get(f"/api/conversations/{listed[0]['id']}").json()
        assert sorted(m["content"] for m in found["messages"]) == [
            "Echo: remember this",
            "remember this",
        ]
        assert browser.get("/api/search?q=remember").json()["items"]
