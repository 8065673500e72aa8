"""Which models may be asked for: the one answer to "is this model allowed".

A model is allowed when an upstream offers it (upstream/registry.py routes it): an alias, a name
an upstream's allow-list gives, or one its `/models` lists (cached, as `GET /api/models` shows
them). For the environment's upstream (named "default") `MODELS_ALLOWED` decides as before: a
list of names, or `*` for any name (for upstreams that answer to names they do not list). The
default model (`OPENAI_MODEL`, or when it is unset one the default upstream lists:
`UpstreamClient.default_model`) is always allowed.

`allowed` narrows that to a principal's models (admins set them; None: all).
"""

from __future__ import annotations

from .registry import Listing, Registry, Route, not_allowed

__all__ = ["ModelPolicy", "not_allowed"]


class ModelPolicy:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @property
    def any_model(self) -> bool:
        """MODELS_ALLOWED=*: any name may be asked for, listed or not (a picker may take one typed)."""
        return self.registry.any_model

    async def default(self) -> str:
        """The model of a request that names none."""
        return await self.registry.default.default_model()

    async def check(self, model: str | None, allowed: frozenset[str] | None = None) -> Route:
        """Where `model` goes (None: the default) if it may be asked for; else APIError 400
        `MODEL_NOT_ALLOWED`, which says when an upstream's list could not be read.

        `allowed`: the models this principal may use (None: all), by the name they ask for."""
        route = await self.registry.route(model)
        if allowed is not None and route.public not in allowed:
            raise not_allowed(route.public, "An administrator's policy does not list it.")
        return route

    async def listing(self, allowed: frozenset[str] | None = None) -> Listing:
        """The models to offer (the default first) and the warnings of upstreams that are down;
        `allowed`: only those this principal may use (None: all)."""
        listing = await self.registry.listing()
        if allowed is None:
            return listing
        return Listing([m for m in listing.models if m.id in allowed], listing.warnings)

    async def listed(self, allowed: frozenset[str] | None = None) -> list[str]:
        """The names of the models to offer, the default first."""
        return [offered.id for offered in (await self.listing(allowed)).models]
