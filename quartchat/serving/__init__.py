"""How quartchat is served: `serve(settings)` runs the service on APP_HOST:APP_PORT.

- `__init__.py` (here): the start -- migrations once before any worker, the descriptor limit,
  one process or `APP_WORKERS`.
- `hypercorn.py` (the default) and `uvicorn.py` (`SERVER=uvicorn`): each server, its
  configuration, one process serving, its connection guard.
- `drain.py`: stop signals -> the streams' drain; `workers.py`: the fork onto shared sockets.
- `connections.py`: closed when their client closes them, capped below the descriptor limit.
- `adapters/`: each server library's private names, one module per library, each name with its
  canary in tests/serving/.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

from ..auth import bootstrap
from ..config import Settings
from .connections import raise_descriptor_limit
from .workers import serve_workers


class Server(Protocol):
    """A server module: `listen` makes the listening sockets (before the workers are forked),
    `run` serves on them (or on sockets of its own) until stopped."""

    def listen(self, settings: Settings) -> Any: ...

    def run(self, settings: Settings, sockets: Any = None) -> None: ...


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain (serving/drain.py); exits the process."""
    if not settings.accounts:
        host = settings.app_host.strip("[]")
        if host not in LOOPBACK_HOSTS and not settings.auth_none_allow_network:
            sys.exit(
                f"quartchat: AUTH_MODE=none serves without any login, so it listens only on a "
                f"loopback address, not {settings.app_host}. Set AUTH_NONE_ALLOW_NETWORK=true "
                "if everyone who can reach this address may use it."
            )
    else:
        # Migrations run here, once, before any worker starts (docs/deploy.md, "Upgrades").
        setup_token = asyncio.run(bootstrap.prepare(settings))
        if setup_token:
            _announce_setup(settings, setup_token)
    raise_descriptor_limit()  # before any socket opens; workers inherit it
    # Only the chosen server's module is imported: hypercorn's service never loads uvicorn or
    # uvloop. `settings.server` is one of the modules' names (config.py allows no other).
    server: Server = importlib.import_module(f".{settings.server}", __name__)
    if settings.app_workers == 1:
        server.run(settings)
        return
    warn_without_redis(settings)
    # Each worker keeps its metrics in files here, and a scrape of any of them adds all up
    # (usage/metrics.py). Made before the workers start, removed when they are all gone: a
    # restart begins from zero, as Prometheus expects of a restarted target.
    with tempfile.TemporaryDirectory(prefix="quartchat-metrics-") as directory:
        workers = settings.model_copy(update={"prometheus_multiproc_dir": Path(directory)})
        status = serve_workers(workers, server.run, server.listen(workers))
    sys.exit(status)


def warn_without_redis(settings: Settings) -> None:
    """Say once, before the workers start, what several workers without Redis means for replies
    kept on the server (docs/deploy.md, "Several processes or hosts: Redis")."""
    if settings.accounts and settings.redis is None and settings.app_workers > 1:
        logging.getLogger("quartchat").warning(
            "replies are followed across workers through the database; "
            "set REDIS_URL to make it live"
        )


def _announce_setup(settings: Settings, token: str) -> None:
    """Print the one-time setup link, as Jupyter prints its token: to the console, not the log
    (it is a credential, valid until the first admin exists)."""
    host = settings.app_host
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    print(
        "\n    No account yet. To create the admin account, open\n"
        f"    http://{host}:{settings.app_port}/setup?token={token}\n"
        "    (or run `quartchat create-admin --email you@example.com`)\n",
        file=sys.stderr,
        flush=True,
    )
