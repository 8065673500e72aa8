"""`python -m quartchat` / `quartchat`: serve the app on APP_HOST:APP_PORT.

Use this rather than a server's own command in production: it migrates before any worker starts,
drains streams on SIGTERM and runs `APP_WORKERS` processes on one listening socket
(quartchat/serving/).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from pydantic import ValidationError

from .app import configure_logging
from .auth import bootstrap
from .config import get_settings
from .db.migrate import DatabaseTooNew, migrate
from .errors import APIError
from .serving import serve
from .upstream.config import UpstreamsFileError
from .upstream.config import load as load_upstreams


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
    try:
        settings = get_settings()
    except ValidationError as error:  # a setting out of its range (SERVER=granian): said plainly
        sys.exit(f"quartchat: {error}")
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
            serve(settings)
    except (DatabaseTooNew, APIError, UpstreamsFileError) as error:
        sys.exit(f"quartchat: {error}")


def _ask_password() -> str:
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Again: "):
        sys.exit("quartchat: the two passwords differ")
    return password


if __name__ == "__main__":
    main()
