"""The upstreams a request may be routed to, by model name.

One client per upstream (upstream/config.py says which there are and in what order: the default
first). A model name is routed in three passes, the first match winning:

1. an alias (`aliases` in UPSTREAMS_FILE): to its upstream, under the upstream's model id;
2. a model an upstream offers: the default upstream's default model, a name in an upstream's
   allow-list (`models`, or MODELS_ALLOWED for the environment's upstream), or, where there is
   none, a name in its `/models` list (cached) -- in the upstreams' order, so a model several
   upstreams list goes to the first;
3. MODELS_ALLOWED=*: the environment's upstream takes any name no other upstream offers.

Anything else is 400 `MODEL_NOT_ALLOWED` (404 under /v1).

An upstream whose `/models` cannot be read is "down": its models leave the listing (the default
upstream keeps its default model, which requests naming no model still go to), `listing()`
carries a warning naming it, and the log says so once when that changes, not per request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

import httpx

from ..config import Settings
from ..errors import APIError
from ..usage.meter import Price
from .client import ModelList, UpstreamClient
from .config import DEFAULT, Upstream

log = logging.getLogger("quartchat")

ANY = "*"

__all__ = ["DEFAULT", "Listing", "Offered", "Registry", "Route"]


class Route(NamedTuple):
    """Where a request goes: the upstream's client and name, the model id the upstream knows, and
    the name the user asked for (what the ledger and the reply say)."""

    client: UpstreamClient
    model: str
    public: str
    upstream: str


class Offered(NamedTuple):
    """A model to offer: its public name, the upstream it goes to, its price if known."""

    id: str
    upstream: str
    price: Price | None


class Listing(NamedTuple):
    """Every model offered (the default first), and what is wrong with upstreams that are down."""

    models: list[Offered]
    warnings: list[str]


class Registry:
    """The upstreams, in order (the default first), and the routing between them."""

    def __init__(self, clients: Iterable[UpstreamClient]) -> None:
        self.clients = {client.name: client for client in clients}
        self.default = next(iter(self.clients.values()))
        self._down: dict[str, bool] = {}

    @classmethod
    def build(
        cls,
        settings: Settings,
        upstreams: list[Upstream],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Registry:
        """One client per upstream (`transport`: tests' stand-in for every upstream)."""
        return cls(UpstreamClient(settings, transport, upstream=u) for u in upstreams)

    async def aclose(self) -> None:
        """Close every upstream's client."""
        for client in self.clients.values():
            await client.aclose()

    async def check(self) -> None:
        """At start: read every upstream's model list once, so the log says which default is
        used and which upstreams are down (never raises)."""
        await self.default.check_models()
        for client in self.clients.values():
            if client is not self.default and not client.needs_key:
                try:
                    await self._list(client)
                except Exception as exc:  # a start-up check must not stop the service
                    log.warning("could not check upstream %r: %s", client.name, type(exc).__name__)

    @property
    def needs_key(self) -> bool:
        """No upstream can work: the only one is OpenAI's, without OPENAI_API_KEY."""
        return len(self.clients) == 1 and self.default.needs_key

    @property
    def any_model(self) -> bool:
        """MODELS_ALLOWED=*: a name no upstream offers goes to the environment's upstream."""
        return self._catch_all() is not None

    def _catch_all(self) -> UpstreamClient | None:
        env = self.clients.get(DEFAULT)
        if env is not None and env.upstream.from_env and ANY in env.settings.models_allowed:
            return env
        return None

    async def route(self, model: str | None) -> Route:
        """Where a request for `model` (None: the default model) goes; 400 `MODEL_NOT_ALLOWED`
        for a name no upstream offers."""
        if model is None:
            name = await self.default.default_model()
            return Route(self.default, name, name, self.default.name)
        for client in self.clients.values():
            target = client.upstream.aliases.get(model)
            if target is not None:
                return Route(client, target, model, client.name)
        catch_all = self._catch_all()
        if catch_all is not None and len(self.clients) == 1:
            return Route(catch_all, model, model, catch_all.name)  # no list asked, as before
        unread: list[UpstreamClient] = []
        for client in self.clients.values():
            named = client.named_models
            if model in named:
                return Route(client, model, model, client.name)
            if client is self.default and model == await client.default_model():
                return Route(client, model, model, client.name)
            if named or client is catch_all:
                continue
            listed = await self._list(client)
            if listed.fetched and model in listed.ids:
                return Route(client, model, model, client.name)
            if not listed.fetched:
                unread.append(client)
        if catch_all is not None:
            return Route(catch_all, model, model, catch_all.name)
        raise await self._not_offered(model, unread)

    async def _not_offered(self, model: str, unread: list[UpstreamClient]) -> APIError:
        if len(self.clients) == 1:  # one upstream: said as before there were several
            client = self.default
            if client.named_models:
                return not_allowed(model, "MODELS_ALLOWED does not list it.")
            if unread:
                return not_allowed(
                    model,
                    "The upstream's list of models could not be fetched, so only the default "
                    f"model ({await client.default_model()}) may be used for now "
                    "(MODELS_ALLOWED=* allows any).",
                )
            return not_allowed(model, "The upstream does not list it.")
        if unread:
            names = ", ".join(repr(client.name) for client in unread)
            return not_allowed(
                model,
                f"No upstream offers it (the models of {names} could not be listed now).",
            )
        return not_allowed(model, "No upstream offers it.")

    def price(self, model: str, upstream: str | None = None) -> Price | None:
        """What `model` (a public name) costs, if the configuration says: from `upstream`'s
        prices (None: the first upstream that prices it), by that name or, for an alias, by the
        model id it stands for."""
        clients = self.clients.values()
        if upstream is not None and upstream in self.clients:
            clients = [self.clients[upstream]]  # type: ignore[assignment]
        for client in clients:
            config = client.upstream
            price = config.prices.get(model)
            if price is None and model in config.aliases:
                price = config.prices.get(config.aliases[model])
            if price is not None:
                return price
        return None

    async def listing(self) -> Listing:
        """The models to offer: the union of every upstream's (the default model first, then in
        the upstreams' order; a name offered twice goes where `route` sends it), aliases and
        allow-lists applied; and a warning for each upstream that is down."""
        offers = {client.name: await self.offers(client) for client in self.clients.values()}
        aliased = {a: c for c in self.clients.values() for a in c.upstream.aliases}
        offered: dict[str, Offered] = {}
        warnings: list[str] = []

        def offer(name: str, client: UpstreamClient) -> None:
            owner = aliased.get(name, client)
            if name not in offered and offers[owner.name] is not None:
                offered[name] = Offered(name, owner.name, self.price(name, owner.name))

        default = self.default
        for client in self.clients.values():
            names = offers[client.name]
            if names is None:
                warnings.append(down_warning(client.name))
                if client is default:  # what a request naming no model still goes to
                    name = await default.default_model()
                    offered[name] = Offered(name, default.name, self.price(name, default.name))
                continue
            if client is default:
                offer(await default.default_model(), client)
            for name in [*names, *client.upstream.aliases]:
                offer(name, client)
        return Listing(list(offered.values()), warnings)

    async def offers(self, client: UpstreamClient) -> list[str] | None:
        """The model ids `client`'s upstream offers (None: it is down)."""
        if client.upstream.from_env and client.named_models:
            # MODELS_ALLOWED names them: offered without asking the upstream, as before.
            default = await client.default_model()
            return [default, *sorted(set(client.named_models) - {default})]
        listed = await self._list(client)
        if not listed.fetched:
            return None
        models = client.upstream.models
        return list(models) if models is not None else listed.ids

    async def _list(self, client: UpstreamClient) -> ModelList:
        """`client`'s model list (cached), noting in the log when it goes down or comes back."""
        listed = await client.model_list()
        down = not listed.fetched
        if self._down.get(client.name, False) != down:
            if down:
                log.warning("%s", down_warning(client.name))
            elif client.name in self._down:
                log.info("the upstream %r lists its models again", client.name)
            self._down[client.name] = down
        return listed


def down_warning(name: str) -> str:
    """What the picker and the log say of an upstream whose list of models cannot be read."""
    return (
        f"The upstream {name!r} cannot be reached (its list of models could not be read): "
        "its models are left out for now."
    )


def not_allowed(model: str, why: str) -> APIError:
    shown = model if len(model) <= 80 else model[:79] + "…"
    return APIError(400, "MODEL_NOT_ALLOWED", f"The model {shown!r} is not allowed here. {why}")
