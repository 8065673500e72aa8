"""aiohttp's undocumented names (aiohttp 3.14.5, pinned in requirements.txt).

- `ClientResponse.connection.protocol`: the connection's `ResponseHandler`
  (aiohttp.client_proto, not exported), and on it
- `ResponseHandler.read_timeout` (a settable property) and `start_timeout()` (re-arms, or with
  no timeout cancels, the `sock_read` timer the last packet armed).
"""

from __future__ import annotations

import aiohttp


def stop_read_timeout(response: aiohttp.ClientResponse) -> None:
    """No more `sock_read` timeout on `response`'s connection, from now on."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = None
        connection.protocol.start_timeout()  # cancels the timer the last packet armed
