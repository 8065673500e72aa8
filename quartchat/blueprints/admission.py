"""What every route that reaches the upstream asks first: may this user start one more request,
with this model? (The limits themselves live in usage/limits.py and upstream/models.py.)"""

from __future__ import annotations

from quart import current_app

from ..auth.principal import current_principal
from ..streaming.watch import Holder, LiveStreams
from ..upstream.models import ModelPolicy
from ..usage.limits import SHARED, Slot, StreamSlots


def holder() -> Holder | None:
    """Who the request's stream runs for (None without accounts)."""
    principal = current_principal()
    if principal is None:
        return None
    return Holder(principal.user_id, principal.via, principal.credential)


async def slot() -> Slot:
    """A slot of the user's concurrent requests, or 429 `TOO_MANY_STREAMS`; release it when the
    response ends."""
    slots: StreamSlots = current_app.extensions["slots"]
    principal = current_principal()
    return await slots.acquire(principal.user_id if principal is not None else SHARED)


async def check_model(model: str | None) -> None:
    """Nothing if `model` may be asked for; else 400 `MODEL_NOT_ALLOWED`."""
    policy: ModelPolicy = current_app.extensions["models"]
    await policy.check(model)


def end_streams(user_id: int, via: str | None = None, credential: str | None = None) -> None:
    """End the user's open streams in this process at once (all, those by one kind of
    credential, or by one credential): they were logged out, revoked or disabled. Other
    processes notice within a second (usage/revocation.py)."""
    streams: LiveStreams = current_app.extensions["streams"]
    streams.end_user(user_id, via, credential)
