"""The API's description: what /openapi.json says, and schemathesis holding the service to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from .fake_upstream import FakeUpstream
from .service import ROOT, Service

CHAT_ERRORS = {"400", "403", "413", "415", "429", "500", "502", "503", "504"}


async def spec(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = orjson.loads(await response.get_data())
    return document


async def test_every_api_endpoint_is_described_and_nothing_else(client: Client) -> None:
    paths = (await spec(client))["paths"]
    assert {(path, method) for path in paths for method in paths[path]} == {
        ("/health", "get"),
        ("/api/models", "get"),
        ("/api/chat", "post"),
        ("/api/chat/stream", "post"),
    }


async def test_chat_requests_are_required_json_and_errors_have_the_one_shape(
    client: Client,
) -> None:
    document = await spec(client)
    for path in ("/api/chat", "/api/chat/stream"):
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"application/json"}
        assert body["content"]["application/json"]["schema"]["required"] == ["messages"]
        assert set(operation["responses"]) >= CHAT_ERRORS
        for status in CHAT_ERRORS:
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert set(schema["properties"]) == {"error"}


async def test_the_stream_is_described_as_server_sent_events(client: Client) -> None:
    document = await spec(client)
    ok = document["paths"]["/api/chat/stream"]["post"]["responses"]["200"]
    events = ok["content"]["text/event-stream"]["schema"]["oneOf"]
    assert [e["properties"]["event"]["const"] for e in events] == ["chunk", "done", "error"]
    referenced = {"ChatResponse", "ErrorResponse"}
    assert referenced <= set(document["components"]["schemas"])


async def test_the_docs_page_loads_only_our_own_files(client: Client) -> None:
    response = await client.get("/docs")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html and "<script>" not in html


@pytest.mark.e2e
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Property-based: every check schemathesis has, on every endpoint, against the real service.

    The seed is fixed so CI is repeatable; SCHEMATHESIS_SEED explores others.
    """
    seed = os.environ.get("SCHEMATHESIS_SEED", "20261201")
    with Service(fake.url) as service:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{service.url}/openapi.json",
                "--checks=all",
                "--phases=examples,coverage,fuzzing",
                "--max-examples=150",
                f"--seed={seed}",
                "--workers=1",  # hypothesis's lambda introspection is not thread-safe on 3.11
                "--generation-database=none",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "4 passed" in run.stdout or "No issues found" in run.stdout
