"""`python -m quartchat` / `quartchat`: serve the app with hypercorn on APP_HOST:APP_PORT."""

from __future__ import annotations

import asyncio

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .app import create_app
from .config import get_settings


def main() -> None:
    settings = get_settings()
    config = Config()
    config.bind = [f"{settings.app_host}:{settings.app_port}"]
    config.accesslog = None  # quartchat writes its own structured line per request
    config.keep_alive_timeout = 75  # longer than typical reverse-proxy idle pools (nginx: 60 s)
    app = create_app(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not available on every platform
        asyncio.run(serve(app, config))
    else:
        uvloop.run(serve(app, config))


if __name__ == "__main__":
    main()
