"""What every route that reaches the upstream asks first: may this user start one more request,
with this model, and where does it go? (The limits themselves live in usage/limits.py,
usage/budgets.py and upstream/models.py; routing in upstream/registry.py.)

`admit()` is the one door: it checks the model, routes it, asks each gate (rate limits, budgets)
and takes a slot of the user's concurrent requests. What it admits is metered (usage/meter.py):
the view hands `Admitted.meter(...)` to the relay as its observer, and every sink (ledger,
metrics, budgets) hears once how the request went -- refused here, failed before its stream, or
ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from quart import current_app, g

from ..auth.principal import Principal, current_principal
from ..errors import APIError
from ..streaming import relay
from ..streaming.relay import Observer
from ..streaming.watch import Holder, LiveStreams, reply_too_long
from ..upstream.client import UpstreamStream
from ..upstream.models import ModelPolicy
from ..upstream.registry import Registry, Route
from ..usage.limits import NO_SLOT, SHARED, Slot, StreamSlots
from ..usage.meter import Meter, Request, Sink
from ..usage.policies import Policies

T = TypeVar("T")


class Gate(Protocol):
    """A limit checked at admission (usage/budgets.py): raises APIError 429 to refuse; may note
    on the request what it reserved, to settle when the request's record comes."""

    async def admit(self, request: Request) -> None: ...

    def withdraw(self, request: Request) -> None:
        """An admitted request that never went upstream (a retried send that replays its
        reply): give back what it reserved."""


class Admitted:
    """An admitted request: where it goes, its slot, and its meter."""

    __slots__ = ("_meter", "principal", "request", "route", "slot")

    def __init__(self, request: Request, slot: Slot, principal: Principal | None = None) -> None:
        self.request = request
        self.slot = slot
        self.principal = principal
        self.route: Route | None = None
        self._meter: Meter | None = None

    async def choose(self, model: str | None) -> Route:
        """Check that the user may use `model` (None: the default) and route it; raises 400
        `MODEL_NOT_ALLOWED` (the request is metered as refused)."""
        try:
            policy: ModelPolicy = current_app.extensions["models"]
            route = await policy.check(model, await _allowed(self.principal))  # routed once
        except APIError as error:
            await self.failed(error)
            raise
        self.route = route
        self.request.upstream = route.upstream
        self.request.model = route.public
        self.request.price = registry().price(route.public, route.upstream)
        return route

    @property
    def routed(self) -> Route:
        """Where the request goes (`choose` has routed it)."""
        assert self.route is not None, "choose() routes a request before it goes anywhere"
        return self.route

    def meter(self, then: Observer | None) -> Meter:
        """The relay's observer for this request, passing everything on to `then`."""
        if self._meter is None:
            self._meter = Meter(self.request, _sinks(), then)
        else:
            self._meter.then = then
        return self._meter

    async def failed(self, error: APIError) -> None:
        """The request ends before its stream began: metered once, its slot given back."""
        self.slot.release()
        await (self._meter or self.meter(None)).failed(error)

    def withdraw(self) -> None:
        """Nothing went upstream after all (a retried send replays its reply instead)."""
        self.slot.release()
        for gate in _gates():
            gate.withdraw(self.request)

    @asynccontextmanager
    async def opening(self) -> AsyncIterator[None]:
        """Around opening the upstream: a refusal or failure there is metered."""
        try:
            yield
        except APIError as error:
            await self.failed(error)
            raise

    async def stream(
        self, open_stream: Callable[[], Awaitable[UpstreamStream]], encoder: relay.Encoder
    ) -> AsyncIterator[bytes]:
        """The request's stream through the relay, once the upstream's first bytes are in: its
        meter observes it (passing on to the access record), its slot goes back when it ends."""
        async with self.opening():
            return await relay.start(
                open_stream,
                encoder,
                current_app.extensions["streams"],
                self.meter(g.access),
                self.request.request_id,
                holder=_holder(self.principal),
                slot=self.slot,
            )

    async def whole(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call`'s answer (a whole, non-streamed one), within MAX_REPLY_SECONDS (else 504
        REPLY_TOO_LONG); a failure is metered, and the slot goes back either way. The view
        meters the answer (`meter(None).ended(...)`) once it has folded it."""
        longest: float = current_app.config["QUARTCHAT"].max_reply_seconds
        try:
            async with self.opening():
                try:
                    async with asyncio.timeout(longest):
                        return await call()
                except TimeoutError:
                    raise reply_too_long(longest) from None
        finally:
            self.slot.release()


async def admit(
    route: str,
    model: str | None = None,
    *,
    choose: bool = True,
    prompt_chars: int = 0,
    max_tokens: int | None = None,
) -> Admitted:
    """Admit a request of `route` (page, api, v1.chat, v1.embeddings) for `model`, or raise the
    refusal (400 MODEL_NOT_ALLOWED, 429 RATE_LIMITED / TOO_MANY_STREAMS), metered.

    `choose=False`: the model is not known yet (a page turn's comes from its conversation, read
    once the turn has begun); call `Admitted.choose` then. Rate limits and the slot come first,
    so that a refused turn writes nothing.
    """
    principal = current_principal()
    request = Request(
        route,
        g.request_id,
        principal.user_id if principal is not None else None,
        int(principal.credential) if principal is not None and principal.via == "token" else None,
        prompt_chars=prompt_chars,
        max_tokens=max_tokens,
    )
    admitted = Admitted(request, NO_SLOT, principal)
    if choose:
        await admitted.choose(model)
    try:
        for gate in _gates():
            await gate.admit(request)
        admitted.slot = await _slot(principal)
    except APIError as error:
        await admitted.failed(error)
        raise
    return admitted


def registry() -> Registry:
    upstreams: Registry = current_app.extensions["upstreams"]
    return upstreams


def _sinks() -> tuple[Sink, ...]:
    sinks: tuple[Sink, ...] = current_app.extensions.get("sinks", ())
    return sinks


def _gates() -> tuple[Gate, ...]:
    gates: tuple[Gate, ...] = current_app.extensions.get("gates", ())
    return gates


def holder() -> Holder | None:
    """Who the request's stream runs for (None without accounts)."""
    return _holder(current_principal())


def _holder(principal: Principal | None) -> Holder | None:
    if principal is None:
        return None
    return Holder(principal.user_id, principal.via, principal.credential)


async def _slot(principal: Principal | None) -> Slot:
    """A slot of `principal`'s concurrent requests, or 429 `TOO_MANY_STREAMS`; released when the
    response ends."""
    slots: StreamSlots = current_app.extensions["slots"]
    return await slots.acquire(principal.user_id if principal is not None else SHARED)


async def check_model(model: str | None) -> None:
    """Nothing if `model` may be asked for; else 400 `MODEL_NOT_ALLOWED`."""
    policy: ModelPolicy = current_app.extensions["models"]
    await policy.check(model)


async def allowed_models() -> frozenset[str] | None:
    """The models the caller's policy allows (usage/policies.py); None: every model."""
    return await _allowed(current_principal())


async def _allowed(principal: Principal | None) -> frozenset[str] | None:
    policies: Policies | None = current_app.extensions.get("policies")
    if policies is None:
        return None
    if principal is None:
        return policies.defaults.models
    return (await policies.effective(principal.user_id, principal.role)).models


def end_streams(user_id: int, via: str | None = None, credential: str | None = None) -> None:
    """End the user's open streams in this process at once (all, those by one kind of
    credential, or by one credential): they were logged out, revoked or disabled. Other
    processes notice within a second (usage/revocation.py)."""
    streams: LiveStreams = current_app.extensions["streams"]
    streams.end_user(user_id, via, credential)
