"""quartchat: a small, fast, self-hosted chat UI and OpenAI-compatible streaming proxy."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quartchat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

from .app import create_app

__all__ = ["__version__", "create_app"]
