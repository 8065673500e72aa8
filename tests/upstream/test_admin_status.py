"""The admin's view of every upstream: which one is the default, how many models each offers,
which one is down, and which refused its key -- never a URL (it may hold a password)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from quartchat import create_app

from ..auth.conftest import accounts_settings
from ..fake_upstream import FakeUpstream, Reply
from ..usage.conftest import user


async def test_the_admin_sees_each_upstream_up_down_or_refusing_its_key(
    database: URL, tmp_path: Path, fake: FakeUpstream
) -> None:
    with FakeUpstream() as second, FakeUpstream() as third:
        second.models = ["llama3.2:3b", "qwen3:4b"]
        third.stop()  # its port refuses connections: down
        with_password = second.url.replace("http://", "http://user:secret@")
        path = tmp_path / "upstreams.toml"
        path.write_text(
            f'[[upstreams]]\nname = "second"\nbase_url = "{with_password}"\n'
            f'[[upstreams]]\nname = "third"\nbase_url = "{third.url}"\n'
        )
        fake.reply_with(Reply(401, [b'{"error": {"message": "Incorrect API key"}}']))
        settings = accounts_settings(
            database, tmp_path, openai_api_base=fake.url, upstreams_file=path
        )
        app = create_app(settings)
        async with app.test_app():
            admin, _ = await user(app, "ada@example.com", role="admin")
            ann, _ = await user(app, "ann@example.com")
            await admin.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}]})
            response = await admin.get("/api/admin/upstream")
            refused = await ann.get("/api/admin/upstream")
    body = await response.get_json()
    states = {u["name"]: u for u in body["upstreams"]}
    assert list(states) == ["default", "second", "third"]
    assert states["default"]["default"] is True
    assert states["default"]["last_auth_failure"]["status"] == 401
    assert (states["second"]["up"], states["second"]["models"]) == (True, 2)
    assert states["second"]["last_auth_failure"] is None
    assert (states["third"]["up"], states["third"]["models"]) == (False, 0)
    assert "secret" not in await response.get_data(as_text=True)
    assert refused.status_code == 403
