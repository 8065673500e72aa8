"""Policies through the app: the admin API, model access, and the budgets they set (on both
databases, in front of the fake upstream)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import insert
from sqlalchemy.engine import URL

from quartchat import create_app
from quartchat.db import Database
from quartchat.db.tables import usage_daily
from quartchat.usage import policies as policies_module
from quartchat.usage.policies import Policies, Policy

from ..auth.conftest import PASSWORD, accounts_settings
from ..conftest import CHAT, assert_error
from ..fake_upstream import FakeUpstream
from .conftest import user


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Every user has a cost budget unless a policy says otherwise."""
    return {"default_cost_per_month": 3.0}


@pytest.fixture
async def admin(app: Quart) -> tuple[Client, int]:
    return await user(app, "ada@example.com", role="admin")


async def put(client: Client, subject: str, **fields: Any) -> Any:
    return await client.put(f"/api/admin/policies/{subject}", json=fields)


async def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    return assert_error(response.status_code, await response.get_data(), status, code)


async def test_a_role_policy_limits_its_users_and_a_user_policy_overrides_it(
    admin: tuple[Client, int], ann: tuple[Client, int], eve: tuple[Client, int]
) -> None:
    ada, _ = admin
    (ann_client, ann_id), (eve_client, _) = ann, eve
    assert (await put(ada, "role:user", requests_per_minute=1)).status_code == 200
    assert (await put(ada, f"user:{ann_id}", requests_per_minute=0)).status_code == 200  # none

    assert (await eve_client.post("/api/chat", json=CHAT)).status_code == 200
    refused = await eve_client.post("/api/chat", json=CHAT)
    for _ in range(3):
        assert (await ann_client.post("/api/chat", json=CHAT)).status_code == 200

    error = await error_of(refused, 429, "RATE_LIMITED")
    assert "requests per minute: 1" in error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_the_admin_api_lists_the_defaults_and_the_policies(
    admin: tuple[Client, int], ann: tuple[Client, int]
) -> None:
    ada, _ = admin
    _, ann_id = ann
    await put(ada, f"user:{ann_id}", models=["fake-small"], cost_per_month=2.5)
    await put(ada, "role:user", tokens_per_day=5000)

    listed = orjson.loads(await (await ada.get("/api/admin/policies")).get_data())

    assert listed["defaults"] == {
        "requests_per_minute": None,
        "tokens_per_day": None,
        "cost_per_month": 3.0,
    }
    assert listed["policies"] == [
        {
            "subject": "role:user",
            "models": None,
            "requests_per_minute": None,
            "tokens_per_day": 5000,
            "cost_per_month": None,
        },
        {
            "subject": f"user:{ann_id}",
            "models": ["fake-small"],
            "requests_per_minute": None,
            "tokens_per_day": None,
            "cost_per_month": 2.5,
        },
    ]
    assert (await ada.delete(f"/api/admin/policies/user:{ann_id}")).status_code == 200
    await error_of(await ada.delete(f"/api/admin/policies/user:{ann_id}"), 404, "NOT_FOUND")


async def test_policies_are_for_admins_and_real_subjects(
    admin: tuple[Client, int], ann: tuple[Client, int]
) -> None:
    ada, _ = admin
    ann_client, _ = ann
    await error_of(await put(ann_client, "role:user", models=[]), 403, "FORBIDDEN")
    await error_of(await ann_client.get("/api/admin/policies"), 403, "FORBIDDEN")
    await error_of(await put(ada, "role:owner", models=[]), 404, "NOT_FOUND")
    await error_of(await put(ada, "user:99999", models=[]), 404, "NOT_FOUND")
    await error_of(await put(ada, "role:user", tokens_per_day=-1), 400, "INVALID_REQUEST")


async def test_a_model_the_policy_does_not_allow_is_refused_and_not_listed(
    app: Quart, admin: tuple[Client, int], ann: tuple[Client, int]
) -> None:
    ada, _ = admin
    ann_client, _ = ann
    await put(ada, "role:user", models=["fake-small"])

    refused = await ann_client.post("/api/chat", json={**CHAT, "model": "fake-large"})
    allowed = await ann_client.post("/api/chat", json={**CHAT, "model": "fake-small"})
    models = orjson.loads(await (await ann_client.get("/api/models")).get_data())["models"]
    admins = orjson.loads(await (await ada.get("/api/models")).get_data())["models"]
    made = await ann_client.post("/api/auth/tokens", json={"name": "editor", "password": PASSWORD})
    assert made.status_code == 201, await made.get_data()
    bearer = {"Authorization": f"Bearer {(await made.get_json())['token']}"}
    v1 = await (await app.test_client().get("/v1/models", headers=bearer)).get_json()
    v1_refused = await app.test_client().post(
        "/v1/chat/completions", headers=bearer, json={**CHAT, "model": "fake-large"}
    )

    error = await error_of(refused, 400, "MODEL_NOT_ALLOWED")
    assert "policy" in error["message"]
    assert allowed.status_code == 200
    assert models == ["fake-small"]
    assert "fake-large" in admins
    assert [m["id"] for m in v1["data"]] == ["fake-small"]
    assert v1_refused.status_code == 404  # OpenAI's answer for a model one may not use


async def test_a_new_app_starts_the_days_tokens_from_the_ledgers_roll_ups(
    database: URL, tmp_path: Path, fake: FakeUpstream
) -> None:
    settings = accounts_settings(
        database, tmp_path, openai_api_base=fake.url, default_tokens_per_day=1000
    )
    app = create_app(settings)
    async with app.test_app():
        (ann_client, ann_id), (eve_client, _) = (
            await user(app, "ann@example.com"),
            await user(app, "eve@example.com"),
        )
        db: Database = app.extensions["db"]
        today = datetime.now(UTC).date()
        async with db.write() as connection:  # what the ledger rolled up before the restart
            await connection.execute(
                insert(usage_daily).values(
                    day=today,
                    user_id=ann_id,
                    model_id=1,
                    requests=3,
                    errors=0,
                    estimated=0,
                    prompt_tokens=600,
                    completion_tokens=350,
                    cost_micros=0,
                )
            )
        body = {**CHAT, "max_tokens": 100}

        refused = await ann_client.post("/api/chat", json=body)
        other = await eve_client.post("/api/chat", json=body)

        error = await error_of(refused, 429, "RATE_LIMITED")
        assert "tokens per day, UTC: 1,000" in error["message"]
        assert other.status_code == 200


async def test_users_whose_cached_policy_expired_together_wait_for_one_read(
    app: Quart, ann: tuple[Client, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ann_id = ann
    service: Policies = app.extensions["policies"]
    reads = 0
    read_rows = policies_module._rows

    async def counted(*args: Any) -> list[Policy]:
        nonlocal reads
        reads += 1
        return await read_rows(*args)

    monkeypatch.setattr(policies_module, "_rows", counted)
    service._cache.clear()  # every entry expired at once
    found = await asyncio.gather(*(service.effective(ann_id, "user") for _ in range(50)))
    assert reads == 1
    assert len(set(found)) == 1
