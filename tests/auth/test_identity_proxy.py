"""The identity proxy's header is believed narrowly (issue 16, item 6): only a value that names a
user (an email, or AUTH_TRUSTED_HEADER_PATTERN), only once an admin exists, and a start-up
warning when TRUSTED_PROXIES is wider than a proxy needs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart import Quart
from sqlalchemy import func, select

from quartchat import create_app
from quartchat.auth.principal import Networks
from quartchat.db import Database
from quartchat.db.tables import users

from ..conftest import assert_error, make_settings
from .conftest import make_user

PROXY = "10.0.0.1"
OPEN_BEHIND_A_PROXY = {
    "trusted_proxies": PROXY,
    "auth_trusted_header": "Remote-Email",
    "signup_policy": "open",
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return OPEN_BEHIND_A_PROXY


async def as_proxy_user(app: Quart, value: str) -> Any:
    return await app.test_client().get(
        "/api/auth/me", headers={"Remote-Email": value}, scope_base={"client": (PROXY, 5000)}
    )


async def user_count(app: Quart) -> int:
    db: Database = app.extensions["db"]
    async with db.read() as connection:
        return int(await connection.scalar(select(func.count()).select_from(users)) or 0)


@pytest.mark.parametrize(
    "value",
    ["<script>@@not-an-email", "no-at-sign", "two words@example.com", "a@b@c", "x" * 320 + "@e.c"],
)
async def test_a_header_that_is_not_an_email_is_refused_and_creates_nothing(
    app: Quart, value: str
) -> None:
    await make_user(app, "boss@example.com", role="admin")
    response = await as_proxy_user(app, value)
    assert_error(response.status_code, await response.get_data(), 403, "INVALID_IDENTITY_HEADER")
    assert await user_count(app) == 1


async def test_a_header_user_is_not_made_before_an_admin_exists(app: Quart) -> None:
    response = await as_proxy_user(app, "early@example.com")
    assert_error(response.status_code, await response.get_data(), 403, "SETUP_PENDING")
    assert await user_count(app) == 0


class TestUserNames:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {**OPEN_BEHIND_A_PROXY, "auth_trusted_header_pattern": r"[a-z][a-z0-9_]{2,31}"}

    async def test_a_configured_pattern_replaces_the_email_rule(self, app: Quart) -> None:
        await make_user(app, "boss@example.com", role="admin")
        made = await as_proxy_user(app, "alice")
        assert orjson.loads(await made.get_data())["email"] == "alice"
        refused = await as_proxy_user(app, "alice@example.com")
        assert_error(refused.status_code, await refused.get_data(), 403, "INVALID_IDENTITY_HEADER")
        assert await user_count(app) == 2


def test_a_pattern_that_is_not_a_regular_expression_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="AUTH_TRUSTED_HEADER_PATTERN"):
        make_settings(auth_trusted_header_pattern="[unclosed")


# -- how wide TRUSTED_PROXIES may be -------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "wide"),
    [
        ("172.16.0.0/12", ["172.16.0.0/12"]),
        ("10.0.0.0/8, 172.30.83.0/24", ["10.0.0.0/8"]),
        ("172.30.83.0/24, 172.30.83.1, ::1", []),
        ("fd00:1::/64", []),
        ("fd00::/48", ["fd00::/48"]),
    ],
)
def test_networks_wider_than_a_slash_24_or_an_ipv6_slash_64_are_wide(
    trusted: str, wide: list[str]
) -> None:
    assert [str(n) for n in Networks(trusted.split(",")).wide()] == wide


def test_a_wide_trusted_network_is_warned_about_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quartchat.auth")
    settings = make_settings(
        auth_mode="accounts",
        data_dir=tmp_path,
        trusted_proxies="172.16.0.0/12, 172.30.83.1",
        auth_trusted_header="Remote-Email",
    )
    create_app(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "172.16.0.0/12" in warnings[0] and "AUTH_TRUSTED_HEADER" in warnings[0]


def test_a_narrow_trusted_network_starts_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quartchat.auth")
    create_app(make_settings(auth_mode="accounts", data_dir=tmp_path, trusted_proxies="10.0.0.1"))
    assert not [r for r in caplog.records if "TRUSTED_PROXIES" in r.getMessage()]
