"""With REDIS_URL the login throttles count in Redis (no write transaction per attempt) and hold
as they do in the database: test_throttle.py's core tests, run again on an app with Redis."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Quart
from redis.asyncio import Redis
from sqlalchemy import func, select

from quartchat.db import Database
from quartchat.db.tables import rate_limits

from .conftest import make_user
from .test_throttle import (  # run here again, on Redis
    hasher,
    login,
    test_a_known_browser_has_a_limit_of_its_own,
    test_concurrent_wrong_passwords_reach_the_verifier_at_most_limit_times,
    test_successful_logins_from_one_address_do_not_use_up_its_attempts,
    test_the_eleventh_setup_attempt_from_one_address_is_429,
)

__all__ = [
    "hasher",
    "test_a_known_browser_has_a_limit_of_its_own",
    "test_concurrent_wrong_passwords_reach_the_verifier_at_most_limit_times",
    "test_successful_logins_from_one_address_do_not_use_up_its_attempts",
    "test_the_eleventh_setup_attempt_from_one_address_is_429",
]


@pytest.fixture
def settings_overrides(redis_url: str) -> dict[str, Any]:
    return {"redis_url": redis_url}


async def test_login_attempts_are_counted_in_redis_not_in_the_database(
    app: Quart, redis_url: str
) -> None:
    await make_user(app, "ann@example.com")

    assert await login(app.test_client(), "ann@example.com", "wrong", 0) == 401

    db: Database = app.extensions["db"]
    async with db.read() as connection:
        rows = (await connection.execute(select(func.count()).select_from(rate_limits))).scalar()
    assert rows == 0
    redis = Redis.from_url(redis_url)
    try:
        keys = sorted(await redis.keys("quartchat:limit:*"))
    finally:
        await redis.aclose()
    assert keys == [
        b"quartchat:limit:login-email:ann@example.com",
        b"quartchat:limit:login-ip:198.51.0.1",
    ]
