"""How many upstream requests one user may hold at once.

Every request that holds the upstream for a user -- `/api/chat`, `/api/chat/stream`, a
conversation's turn, later a run and the `/v1` gateway -- takes a `Slot` from the one
`StreamSlots` of the app before the upstream is opened, and gives it back when its response ends
(however it ends). Admission is one step that counts and answers (count first, then act): two
requests at once can never both take the last slot.

`LocalStreamSlots` counts in this process. With APP_WORKERS > 1 each worker counts on its own, so
a user may hold up to the limit per worker; an implementation on Redis (one count for all
processes) will take its place behind the same interface.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import APIError

RETRY_AFTER_SECONDS = 5
"""What a refused client is told to wait: a stream's end cannot be known, a few seconds is fair."""

SHARED = "*"
"""The one key when there are no accounts (AUTH_MODE=none with MAX_STREAMS_PER_USER set)."""


def too_many_streams(limit: int) -> APIError:
    return APIError(
        429,
        "TOO_MANY_STREAMS",
        f"You have {limit} replies running already; wait for one to end, or stop one.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Slot(Protocol):
    """One admitted request's place. `release()` gives it back; calling it again does nothing,
    so every path that ends a request (done, error, disconnect, cancellation) may call it."""

    def release(self) -> None: ...


class StreamSlots(Protocol):
    """The per-user count of requests holding the upstream."""

    async def acquire(self, key: int | str) -> Slot:
        """A slot for `key` (a user id, or SHARED), or APIError 429 `TOO_MANY_STREAMS` with
        Retry-After when the key holds its limit already."""
        ...


class Unlimited:
    """No limit (AUTH_MODE=none without MAX_STREAMS_PER_USER, or MAX_STREAMS_PER_USER=0)."""

    async def acquire(self, key: int | str) -> Slot:
        return NO_SLOT


class _NoSlot:
    def release(self) -> None:
        pass


NO_SLOT = _NoSlot()


class _LocalSlot:
    __slots__ = ("_key", "_owner")

    def __init__(self, owner: LocalStreamSlots, key: int | str) -> None:
        self._owner: LocalStreamSlots | None = owner
        self._key = key

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self._key)


class LocalStreamSlots:
    """`StreamSlots` counted in this process: per worker, not per service (see above)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[int | str, int] = {}

    async def acquire(self, key: int | str) -> Slot:
        # No await between the count and the increment: in one event loop this is atomic.
        held = self._held.get(key, 0)
        if held >= self.limit:
            raise too_many_streams(self.limit)
        self._held[key] = held + 1
        return _LocalSlot(self, key)

    def held(self, key: int | str) -> int:
        """How many slots `key` holds now."""
        return self._held.get(key, 0)

    def _give_back(self, key: int | str) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)


def stream_slots(limit: int | None) -> StreamSlots:
    """The slots for a limit (None: unlimited)."""
    return LocalStreamSlots(limit) if limit else Unlimited()
