"""Quart's private names (Quart 0.22.0, pinned in requirements.txt).

- `Body._complete`: the event set once the whole request body has arrived (or was cut off at
  the size limit). Quart has no public wait for it: `await request.body` raises at once on a
  body over the limit.
"""

from __future__ import annotations

import asyncio

from quart.wrappers.request import Body


def body_complete(body: Body) -> asyncio.Event:
    """The event set once `body` has been received to its end."""
    return body._complete
