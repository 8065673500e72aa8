"""quartchat's app for an ASGI server's own command line, for `peers_bench.py` only.

    granian --interface asgi --factory bench.peers.quartchat_factory:create_app

`python -m quartchat` sets up logging before it builds the app; a server started on its own
(`uvicorn --factory`, `granian --factory`) calls only the factory, in its worker. This one does
both, so that quartchat's access line per request is written (and paid for) as deployed.
Migrations and the first admin come before (`python -m quartchat migrate`, `create-admin`).
"""

from __future__ import annotations

from quart import Quart

from quartchat.app import configure_logging
from quartchat.app import create_app as build
from quartchat.config import get_settings


def create_app() -> Quart:
    """The app as `python -m quartchat` would serve it, logging included."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return build(settings)
