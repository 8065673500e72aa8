"""A page turn goes to the upstream its conversation's model names (several upstreams)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from ..conftest import texts
from ..fake_upstream import FakeUpstream
from .conftest import new_conversation, say


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream() as second:
        second.models = ["llama3.2:3b"]
        yield second


@pytest.fixture
def settings_overrides(second: FakeUpstream, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "upstreams.toml"
    path.write_text(
        f'[[upstreams]]\nname = "second"\nbase_url = "{second.url}"\n'
        'aliases = { "local" = "llama3.2:3b" }\n'
    )
    return {"upstreams_file": path, "models_allowed": []}


async def test_a_turn_goes_to_the_upstream_of_its_model_under_the_upstream_s_id(
    ann: Client, fake: FakeUpstream, second: FakeUpstream
) -> None:
    made = await new_conversation(ann, settings={"model": "local"})
    response, events = await say(ann, made["id"], "hi there", "c-1")
    assert response.status_code == 200
    assert texts(events) == "Echo: hi there"
    assert [r.json["model"] for r in second.chat_requests()] == ["llama3.2:3b"]
    assert fake.chat_requests() == []
