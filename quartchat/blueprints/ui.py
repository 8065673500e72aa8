from __future__ import annotations

from quart import Blueprint, current_app, render_template
from quart_schema import hide

blueprint = Blueprint("ui", __name__)


@blueprint.get("/")
@hide
async def index() -> str:
    """The chat page.

    A static shell: conversations live in the browser and talk to `/api/chat/stream`.
    """
    return await render_template(
        "index.html", default_model=current_app.config["QUARTCHAT"].openai_model
    )


@blueprint.get("/docs")
@hide
async def docs() -> str:
    """The API's description as a page (Swagger UI, vendored, on `/openapi.json`)."""
    return await render_template("docs.html")
