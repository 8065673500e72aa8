from __future__ import annotations

from quart import Blueprint, current_app, render_template

blueprint = Blueprint("ui", __name__)


@blueprint.get("/")
async def index() -> str:
    """The chat page.

    A static shell: conversations live in the browser and talk to `/api/chat/stream`.
    """
    return await render_template(
        "index.html", default_model=current_app.config["QUARTCHAT"].openai_model
    )
