"""Saying that a shared service (Redis) is away: once a minute at most, never its address."""

from __future__ import annotations

import logging
import math
import time

EVERY_SECONDS = 60.0


class Outage:
    """A warning for one kind of failure, logged at most once every `every` seconds (not once
    per retry while the service is away), naming the exception's type only: its message may
    name the server, and REDIS_URL may hold a password. `message` has one `%s` for that name."""

    def __init__(self, log: logging.Logger, message: str, every: float = EVERY_SECONDS) -> None:
        self._log = log
        self._message = message
        self._every = every
        self._said_at = -math.inf

    def noticed(self, exc: BaseException) -> None:
        at = time.monotonic()
        if at - self._said_at >= self._every:
            self._said_at = at
            self._log.warning(self._message, type(exc).__name__)
