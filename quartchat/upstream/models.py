"""Which models may be asked for: the one answer to "is this model allowed".

`MODELS_ALLOWED` decides when it is set: a list of names, or `*` for any name (for upstreams that
answer to names they do not list). Unset, the allowed models are what the upstream's `/models`
lists (cached, as `GET /api/models` shows them). `OPENAI_MODEL`, the default, is always allowed.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import APIError
from .client import UpstreamClient

ANY = "*"


class ModelPolicy:
    def __init__(self, settings: Settings, upstream: UpstreamClient) -> None:
        self.default = settings.openai_model
        self.allowed = frozenset(settings.models_allowed)
        self.upstream = upstream

    @property
    def any_model(self) -> bool:
        return ANY in self.allowed

    async def check(self, model: str | None) -> None:
        """Nothing if `model` may be asked for (None: the default); else APIError 400
        `MODEL_NOT_ALLOWED`, which says when the upstream's list could not be read."""
        if model is None or model == self.default or self.any_model or model in self.allowed:
            return
        if self.allowed:
            raise not_allowed(model, "MODELS_ALLOWED does not list it.")
        listed = await self.upstream.model_list()
        if model in listed.ids:
            return
        if not listed.fetched:
            raise not_allowed(
                model,
                "The upstream's list of models could not be fetched, so only the default "
                f"model ({self.default}) may be used for now (MODELS_ALLOWED=* allows any).",
            )
        raise not_allowed(model, "The upstream does not list it.")

    async def listed(self) -> list[str]:
        """The models to offer, the default first: MODELS_ALLOWED's when it names them, else
        the upstream's."""
        if self.allowed and not self.any_model:
            return [self.default, *sorted(self.allowed - {self.default})]
        return await self.upstream.models()


def not_allowed(model: str, why: str) -> APIError:
    shown = model if len(model) <= 80 else model[:79] + "…"
    return APIError(400, "MODEL_NOT_ALLOWED", f"The model {shown!r} is not allowed here. {why}")
