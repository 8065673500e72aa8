"""A user disabled, logged out or whose token is revoked: their open streams end, at once in the
process that made the change, within about a second in any other (changes made straight in the
database stand for another process's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from quart.typing import TestHTTPConnectionProtocol as Connection
from sqlalchemy import delete, update

from quartchat.db import Database
from quartchat.db.tables import api_tokens, now, sessions, users
from quartchat.usage import revocation

from ..conftest import error_event, parse_events
from ..fake_upstream import FakeUpstream
from .conftest import eventually, hanging, read_until, streaming, user
from .test_streams import held


@pytest.fixture
def this_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No check against the database in time for the test: only the route's own signal can end
    the stream."""
    monkeypatch.setattr(revocation, "CHECK_SECONDS", 3600.0)


async def ended(connection: Connection) -> str:
    """The code of the error event the held stream ended with."""
    received = await read_until(connection, b"event: error")
    received = await read_until(connection, b"\n\n", received[received.index(b"event: error") :])
    return str(error_event(parse_events(received))["code"])


async def token_of(client: Client) -> tuple[int, dict[str, str]]:
    made = await (await client.post("/api/auth/tokens", json={"name": "script"})).get_json()
    return made["id"], {"Authorization": f"Bearer {made['token']}"}


@pytest.mark.usefixtures("this_process_only")
async def test_disabling_a_user_ends_their_streams_and_no_one_else_s(
    app: Quart, ann: tuple[Client, int], eve: tuple[Client, int], fake: FakeUpstream
) -> None:
    admin, _ = await user(app, "root@example.com", role="admin")
    fake.reply_with(hanging(), hanging())
    async with streaming(eve[0]), streaming(ann[0]) as anns:
        changed = await admin.patch(f"/api/admin/users/{ann[1]}", json={"status": "disabled"})
        assert changed.status_code == 200
        assert await ended(anns) == "CREDENTIAL_REVOKED"
        await eventually(lambda: held(app, ann[1]) == 0, "ann's stream is over")
        assert held(app, eve[1]) == 1  # eve's runs on
    assert fake.wait_for_disconnect(10) is not None


@pytest.mark.usefixtures("this_process_only")
async def test_logging_out_ends_the_streams_of_that_session(
    ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    fake.reply_with(hanging())
    async with streaming(ann[0]) as stream:
        assert (await ann[0].post("/api/auth/logout", json={})).status_code == 200
        assert await ended(stream) == "CREDENTIAL_REVOKED"


@pytest.mark.usefixtures("this_process_only")
async def test_ending_a_session_from_the_list_ends_its_streams(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    _, bearer = await token_of(ann[0])
    script = app.test_client()  # ends the browser's session with a token, as from elsewhere
    listed = await (await script.get("/api/auth/sessions", headers=bearer)).get_json()
    fake.reply_with(hanging())
    async with streaming(ann[0]) as stream:
        response = await script.delete(f"/api/auth/sessions/{listed[0]['id']}", headers=bearer)
        assert response.status_code == 200
        assert await ended(stream) == "CREDENTIAL_REVOKED"


@pytest.mark.usefixtures("this_process_only")
async def test_revoking_a_token_ends_the_streams_made_with_it(
    app: Quart, ann: tuple[Client, int], fake: FakeUpstream
) -> None:
    token_id, bearer = await token_of(ann[0])
    fake.reply_with(hanging(), hanging())
    async with (
        streaming(ann[0]),
        streaming(app.test_client(), headers=bearer) as by_token,
    ):
        assert (await ann[0].delete(f"/api/auth/tokens/{token_id}")).status_code == 200
        assert await ended(by_token) == "CREDENTIAL_REVOKED"
        await eventually(lambda: held(app, ann[1]) == 1, "the token's stream is over")
        # (and the session's stream, holding the other slot, runs on)


Change = Callable[[Any, int, int], Awaitable[None]]


async def disable(connection: Any, user_id: int, token_id: int) -> None:
    await connection.execute(update(users).where(users.c.id == user_id).values(status="disabled"))


async def end_sessions(connection: Any, user_id: int, token_id: int) -> None:
    await connection.execute(delete(sessions).where(sessions.c.user_id == user_id))


async def revoke(connection: Any, user_id: int, token_id: int) -> None:
    await connection.execute(
        update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=now())
    )


async def expire(connection: Any, user_id: int, token_id: int) -> None:
    # The token's expiry passes while it streams: no request of its own notices that.
    await connection.execute(
        update(api_tokens)
        .where(api_tokens.c.id == token_id)
        .values(expires_at=now() - timedelta(seconds=1))
    )


@pytest.mark.parametrize(
    ("change", "via_token"),
    [(disable, False), (disable, True), (end_sessions, False), (revoke, True), (expire, True)],
    ids=["disabled/session", "disabled/token", "session ended", "token revoked", "token expired"],
)
async def test_a_change_made_by_another_process_ends_the_streams_within_a_second_or_so(
    app: Quart,
    ann: tuple[Client, int],
    fake: FakeUpstream,
    change: Change,
    via_token: bool,
) -> None:
    token_id, bearer = await token_of(ann[0])
    client = app.test_client() if via_token else ann[0]
    fake.reply_with(hanging())
    async with streaming(client, headers=bearer if via_token else None) as stream:
        db: Database = app.extensions["db"]
        async with db.write() as connection:
            await change(connection, ann[1], token_id)
        assert await ended(stream) == "CREDENTIAL_REVOKED"
    assert fake.wait_for_disconnect(10) is not None
