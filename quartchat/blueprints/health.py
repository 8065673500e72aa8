from __future__ import annotations

from quart import Blueprint
from quart_schema import document_response

from .. import __version__
from ..auth.gate import public
from ..schemas import HealthResponse

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@public
@document_response(HealthResponse)
async def health() -> dict[str, str]:
    """Liveness.

    Answers from memory and never calls the upstream, so it stays cheap for load balancers.
    """
    return {"status": "ok", "version": __version__}
