"""The upstreams a request may be routed to, by model name.

For now one: the upstream of OPENAI_API_BASE ("default"). The gateway's registry (several named
upstreams from UPSTREAMS_FILE, aliases, allow-lists, prices) grows here behind the same `route`.
"""

from __future__ import annotations

from typing import NamedTuple

from ..usage.meter import Price
from .client import UpstreamClient

DEFAULT = "default"


class Route(NamedTuple):
    """Where a request goes: the upstream's client and name, the model id the upstream knows, and
    the name the user asked for (what the ledger and the reply say)."""

    client: UpstreamClient
    model: str
    public: str
    upstream: str


class Registry:
    def __init__(self, default: UpstreamClient) -> None:
        self.default = default
        self.clients = {DEFAULT: default}

    async def route(self, model: str | None) -> Route:
        """Where a request for `model` (None: the default model) goes."""
        name = model or await self.default.default_model()
        return Route(self.default, name, name, DEFAULT)

    def price(self, model: str) -> Price | None:
        """What `model` costs, if the configuration says."""
        return None
