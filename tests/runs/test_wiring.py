"""Which log and stop channel the app's runs use, and what several workers without Redis mean."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from quartchat.app import create_app
from quartchat.config import Settings
from quartchat.runs.control import Runs
from quartchat.runs.memory import MemoryLog
from quartchat.runs.redis import RedisLog
from quartchat.serving import warn_without_redis

from ..conftest import make_settings
from ..fake_upstream import FakeUpstream
from ..service import Service

REDIS = "redis://:pw@127.0.0.1:1/0"  # never connected to: the factory connects nothing


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(
        auth_mode="accounts", data_dir=tmp_path, secret_key="test-secret-key", **overrides
    )


def runs_of(settings: Settings) -> Runs:
    runs: Runs = create_app(settings).extensions["runs"]
    return runs


def test_runs_log_to_redis_and_stop_through_it_when_there_is_one(tmp_path: Path) -> None:
    runs = runs_of(settings(tmp_path, redis_url=REDIS))
    assert isinstance(runs.log, RedisLog) and runs.redis_stops is not None
    alone = runs_of(settings(tmp_path))
    assert isinstance(alone.log, MemoryLog) and alone.redis_stops is None


@pytest.mark.parametrize(
    ("workers", "redis", "seconds"),
    [(1, None, 3.0), (2, None, 1.0), (2, REDIS, 3.0)],
)
def test_the_checkpoint_interval_is_a_second_when_workers_share_no_redis(
    tmp_path: Path, workers: int, redis: str | None, seconds: float
) -> None:
    runs = runs_of(settings(tmp_path, app_workers=workers, redis_url=redis))
    assert runs.checkpoint_seconds == seconds


def test_several_workers_without_redis_say_so_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        warn_without_redis(settings(tmp_path, app_workers=2, redis_url=REDIS))
        warn_without_redis(settings(tmp_path, app_workers=1))
        assert caplog.records == []
        warn_without_redis(settings(tmp_path, app_workers=2))
    assert [r.getMessage() for r in caplog.records] == [
        "replies are followed across workers through the database; set REDIS_URL to make it live"
    ]


@pytest.mark.e2e
def test_two_workers_without_redis_warn_once_not_once_each(fake: FakeUpstream) -> None:
    with Service(fake.url, AUTH_MODE="accounts", APP_WORKERS="2") as service:
        pass
    assert service.log().count("set REDIS_URL to make it live") == 1
