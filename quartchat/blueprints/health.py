from __future__ import annotations

from quart import Blueprint

from .. import __version__

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
async def health() -> dict[str, str]:
    """Liveness.

    Answers from memory and never calls the upstream, so it stays cheap for load balancers.
    """
    return {"status": "ok", "version": __version__}
