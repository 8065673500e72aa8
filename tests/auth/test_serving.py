"""`quartchat` with accounts: the first start, the command line, the refusals."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..conftest import SERVERS
from ..fake_upstream import FakeUpstream
from ..service import ROOT, Service
from .conftest import PASSWORD

pytestmark = pytest.mark.e2e


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    """Each test here that runs the service runs on each server."""
    return str(request.param)


def quartchat(
    *args: str, data_dir: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quartchat", *args],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(data_dir), **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_first_start_prints_a_setup_link_that_makes_the_admin(
    fake: FakeUpstream, server: str
) -> None:
    with Service(fake.url, SERVER=server, AUTH_MODE="accounts") as service:
        found = re.search(r"http://\S+/setup\?token=(\S+)", service.log())
        assert found, service.log()
        with httpx.Client(base_url=service.url) as browser:
            assert browser.get("/api/auth/state").json()["setup_required"] is True
            made = browser.post(
                "/api/auth/setup",
                json={"token": found.group(1), "email": "me@example.com", "password": PASSWORD},
            )
            assert made.status_code == 201
            assert browser.get("/api/auth/me").json()["role"] == "admin"
            assert browser.get("/api/auth/state").json()["setup_required"] is False
        assert found.group(1) not in "".join(
            line for line in service.log().splitlines() if "quartchat.access" in line
        )


def test_admin_email_and_password_make_the_first_admin_without_a_link(
    fake: FakeUpstream, server: str
) -> None:
    env = {
        "SERVER": server,
        "AUTH_MODE": "accounts",
        "ADMIN_EMAIL": "root@example.com",
        "ADMIN_PASSWORD": PASSWORD,
    }
    with Service(fake.url, **env) as service:
        assert "setup?token=" not in service.log()
        login = httpx.post(
            service.url + "/api/auth/login",
            json={"email": "root@example.com", "password": PASSWORD},
        )
        assert login.status_code == 200
        assert PASSWORD not in service.log()


def test_two_workers_share_one_migrated_database(fake: FakeUpstream, server: str) -> None:
    env = {
        "SERVER": server,
        "AUTH_MODE": "accounts",
        "APP_WORKERS": "2",
        "ADMIN_EMAIL": "a@example.com",
        "ADMIN_PASSWORD": PASSWORD,
    }
    with Service(fake.url, **env) as service:
        for _ in range(6):  # connections land on either worker
            login = httpx.post(
                service.url + "/api/auth/login",
                json={"email": "a@example.com", "password": PASSWORD},
            )
            assert login.status_code == 200
        # once, by the parent, before the workers started
        assert service.log().count("database migrated from empty to") == 1


def test_create_admin_on_the_command_line_makes_a_working_login(
    tmp_path: Path, fake: FakeUpstream, server: str
) -> None:
    made = quartchat(
        "create-admin",
        "--email",
        "Cli@Example.com",
        "--password-stdin",
        data_dir=tmp_path,
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    with Service(fake.url, SERVER=server, AUTH_MODE="accounts", DATA_DIR=str(tmp_path)) as service:
        assert "setup?token=" not in service.log()
        login = httpx.post(
            service.url + "/api/auth/login", json={"email": "cli@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200


def test_without_accounts_the_service_will_not_listen_on_the_network(tmp_path: Path) -> None:
    refused = quartchat(data_dir=tmp_path, AUTH_MODE="none", APP_HOST="0.0.0.0")
    assert refused.returncode != 0
    assert "AUTH_NONE_ALLOW_NETWORK" in refused.stderr


def test_a_database_from_a_newer_quartchat_stops_the_start(tmp_path: Path) -> None:
    assert quartchat("migrate", data_dir=tmp_path).returncode == 0
    with sqlite3.connect(tmp_path / "quartchat.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dcafe9999'")
    refused = quartchat(data_dir=tmp_path, AUTH_MODE="accounts")
    assert refused.returncode != 0
    assert "newer" in refused.stderr and "f00dcafe9999" in refused.stderr
