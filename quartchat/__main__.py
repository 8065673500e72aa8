"""`python -m quartchat` / `quartchat`: serve the app with hypercorn on APP_HOST:APP_PORT.

Use this rather than the `hypercorn` command in production: it drains streams on SIGTERM (see
`serve()`), and runs `APP_WORKERS` processes on one listening socket.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets
from hypercorn.utils import wrap_app
from prometheus_client import multiprocess

from .app import configure_logging, create_app
from .auth import bootstrap
from .config import Settings, get_settings
from .connections import guard_connections, raise_descriptor_limit
from .db import POOL_SIZE
from .db.migrate import DatabaseTooNew, migrate
from .errors import APIError
from .streaming.watch import LiveStreams
from .upstream.config import UpstreamsFileError
from .upstream.config import load as load_upstreams

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.app_host}:{settings.app_port}"]
    config.accesslog = None  # quartchat writes its own structured line per request
    # A logger rather than "-": its lines go through the root handler once, in quartchat's format
    # (hypercorn's own stderr handler printed each of them twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 75  # longer than typical reverse-proxy idle pools (nginx: 60 s)
    # hypercorn's default of 100 drops SYNs when hundreds of clients connect at once (each drop
    # is a 1 s+ retransmit for that client); the kernel caps it at net.core.somaxconn.
    config.backlog = 4096
    # After the grace period streams are told to stop; give them a moment to say so and close.
    config.graceful_timeout = settings.shutdown_grace_seconds + 3
    return config


async def serve(settings: Settings, config: Config, sockets: Sockets | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain.

    On the first signal the listening socket closes and new chats are refused, while streams in
    flight may finish for up to SHUTDOWN_GRACE_SECONDS; any still running then end with an
    `error` event (SERVER_SHUTTING_DOWN) instead of a silent cut. A second signal ends them now.
    """
    app = create_app(settings)
    streams: LiveStreams = app.extensions["streams"]
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            streams.stop_all()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)

    async def shutdown_trigger() -> None:
        await stop.wait()
        streams.drain(settings.shutdown_grace_seconds)

    # Closes connections their clients closed, caps them below the descriptor limit.
    sockets = guard_connections(
        config,
        sockets,
        upstream_connections=settings.upstream_max_connections + DATABASE_DESCRIPTORS,
    )
    await worker_serve(
        wrap_app(app, config.wsgi_max_body_size, mode="asgi"),
        config,
        sockets=sockets,
        shutdown_trigger=shutdown_trigger,
    )


def _serve_workers(settings: Settings, config: Config) -> int:
    """Fork `APP_WORKERS` processes onto one listening socket; pass stop signals on to them.

    If a worker dies on its own, the others are stopped too and the exit status says so, so that
    the supervisor (Docker's restart policy, systemd) restarts the whole service.
    """
    sockets = config.create_sockets()
    children: set[int] = set()
    for _ in range(settings.app_workers):
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            status = 0
            try:
                asyncio.run(serve(settings, config, sockets))
            except BaseException:
                status = 1
                raise
            finally:
                os._exit(status)
        children.add(pid)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    status = 0
    while children:
        pid, wait_status = os.wait()
        children.discard(pid)
        directory = settings.prometheus_multiproc_dir
        if directory is not None:  # its requests in flight are in flight no more
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        if not stopping:  # a worker died by itself: stop the rest
            status = 1
            forward(signal.SIGTERM, None)
        elif os.waitstatus_to_exitcode(wait_status) != 0:
            status = 1
    return status


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# The database pool's connections and SQLite's writer (db/writer.py): an SQLite connection holds
# three (the file, its WAL, its shared-memory index), a PostgreSQL one a socket.
DATABASE_DESCRIPTORS = 3 * (POOL_SIZE + 1)


def main(argv: list[str] | None = None) -> None:
    """`quartchat [serve]`, `quartchat migrate`, `quartchat create-admin --email …`."""
    parser = argparse.ArgumentParser(prog="quartchat", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="serve on APP_HOST:APP_PORT (what plain `quartchat` does)")
    commands.add_parser("migrate", help="bring the database to this version's schema, then exit")
    create = commands.add_parser(
        "create-admin", help="make (or restore) an administrator account, then exit"
    )
    create.add_argument("--email", required=True)
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of asking for it",
    )
    args = parser.parse_args(argv)
    # Before anything is written: the database, its backups and the secret key are nobody
    # else's (datadir.py covers what was made before, or by `create_app` run elsewhere).
    os.umask(0o077)
    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            asyncio.run(migrate(bootstrap.url_of(settings), bootstrap.backups(settings)))
        elif args.command == "create-admin":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else _ask_password()
            user = asyncio.run(bootstrap.create_admin(settings, args.email, password))
            print(f"{user.email} is an administrator and can log in.", file=sys.stderr)
        else:
            load_upstreams(settings)  # a bad UPSTREAMS_FILE: said once, before any worker starts
            _serve(settings)
    except (DatabaseTooNew, APIError, UpstreamsFileError) as error:
        sys.exit(f"quartchat: {error}")


def _ask_password() -> str:
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Again: "):
        sys.exit("quartchat: the two passwords differ")
    return password


def _serve(settings: Settings) -> None:
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
    # asyncio's own event loop, not uvloop: with hypercorn's stream-based server uvloop measured
    # ~20% more CPU per relayed chunk and fell behind at 500 streams (docs/benchmarks.md).
    raise_descriptor_limit()  # before any socket opens; workers inherit it
    config = hypercorn_config(settings)
    if settings.app_workers == 1:
        asyncio.run(serve(settings, config))
        return
    warn_without_redis(settings)
    # Each worker keeps its metrics in files here, and a scrape of any of them adds all up
    # (usage/metrics.py). Made before the workers start, removed when they are all gone: a
    # restart begins from zero, as Prometheus expects of a restarted target.
    with tempfile.TemporaryDirectory(prefix="quartchat-metrics-") as directory:
        workers = settings.model_copy(update={"prometheus_multiproc_dir": Path(directory)})
        status = _serve_workers(workers, config)
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


if __name__ == "__main__":
    main()
