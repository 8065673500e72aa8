"""Which models may be asked for: the one answer to "is this model allowed".

`MODELS_ALLOWED` decides when it is set: a list of names, or `*` for any name (for upstreams that
answer to names they do not list). Unset, the allowed models are what the upstream's `/models`
lists (cached, as `GET /api/models` shows them). The default model (`OPENAI_MODEL`, or when it is
unset one the upstream lists: `UpstreamClient.default_model`) is always allowed.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import APIError
from .client import UpstreamClient

ANY = "*"


class ModelPolicy:
    def __init__(self, settings: Settings, upstream: UpstreamClient) -> None:
        self.allowed = frozenset(settings.models_allowed)
        self.upstream = upstream

    @property
    def any_model(self) -> bool:
        """MODELS_ALLOWED=*: any name may be asked for, listed or not (a picker may take one typed)."""
        return ANY in self.allowed

    async def default(self) -> str:
        """The model of a request that names none."""
        return await self.upstream.default_model()

    async def check(self, model: str | None) -> None:
        """Nothing if `model` may be asked for (None: the default); else APIError 400
        `MODEL_NOT_ALLOWED`, which says when the upstream's list could not be read."""
        if model is None or self.any_model or model in self.allowed:
            return
        default = await self.default()
        if model == default:
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
                f"model ({default}) may be used for now (MODELS_ALLOWED=* allows any).",
            )
        raise not_allowed(model, "The upstream does not list it.")

    async def listed(self) -> list[str]:
        """The models to offer, the default first: MODELS_ALLOWED's when it names them, else
        the upstream's."""
        if self.allowed and not self.any_model:
            default = await self.default()
            return [default, *sorted(self.allowed - {default})]
        return await self.upstream.models()


def not_allowed(model: str, why: str) -> APIError:
    shown = model if len(model) <= 80 else model[:79] + "…"
    return APIError(400, "MODEL_NOT_ALLOWED", f"The model {shown!r} is not allowed here. {why}")
