"""The API's description: what /openapi.json says, and schemathesis holding the service to it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from quart.typing import TestClientProtocol as Client

from quartchat import __version__, create_app

from .conftest import assert_error, make_settings
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
        ("/v1/models", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/embeddings", "post"),
    }


async def test_the_description_names_the_service_its_version_and_its_error_shape(
    client: Client,
) -> None:
    info = (await spec(client))["info"]
    assert (info["title"], info["version"]) == ("quartchat", __version__)
    assert "Every error has one shape" in info["description"]


@pytest.mark.parametrize("path", ["/redocs", "/scalar", "/openapi.yaml"])
async def test_quart_schema_s_own_pages_are_not_served(client: Client, path: str) -> None:
    # They load their scripts from a CDN, which the page CSP forbids; /docs is ours.
    response = await client.get(path)
    assert response.status_code == 404


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


def refs(node: object) -> set[str]:
    """Every `$ref` anywhere in a JSON document."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node))
    return set()


async def test_every_reference_names_a_component_schema_of_its_own(client: Client) -> None:
    document = await spec(client)
    schemas = document["components"]["schemas"]
    assert refs(document) == {f"#/components/schemas/{name}" for name in schemas}
    for name, schema in schemas.items():
        assert isinstance(schema, dict) and "$defs" not in schema, name
        assert schema["title"] == name


async def test_the_stream_s_description_says_what_its_events_are(client: Client) -> None:
    ok = (await spec(client))["paths"]["/api/chat/stream"]["post"]["responses"]["200"]
    assert ok["description"].startswith("A `text/event-stream` of `chunk` events")


async def test_the_docs_page_loads_only_our_own_files(client: Client) -> None:
    response = await client.get("/docs")
    html = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html and "<script>" not in html


ADMIN = {"email": "admin@example.com", "password": "correct horse battery staple"}


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Client]:
    """The app with accounts, and a client logged in as its first admin."""
    settings = make_settings(
        auth_mode="accounts",
        data_dir=tmp_path,
        admin_email=ADMIN["email"],
        admin_password=ADMIN["password"],
    )
    app = create_app(settings)
    async with app.test_app():
        await app.extensions["accounts"].first_admin_from_settings()
        client = app.test_client()
        assert (await client.post("/api/auth/login", json=ADMIN)).status_code == 200
        yield client


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, o) for p, methods in document["paths"].items() for m, o in methods.items()]


PUBLIC = {
    ("/health", "get"),
    ("/api/auth/state", "get"),
    ("/api/auth/login", "post"),
    ("/api/auth/setup", "post"),
    ("/api/auth/signup", "post"),
    ("/api/auth/invite", "post"),
    ("/api/auth/invite/accept", "post"),
}


async def test_with_accounts_every_operation_documents_its_success_and_its_credentials(
    admin: Client,
) -> None:
    document = await spec(admin)
    assert set(document["components"]["securitySchemes"]) == {"token", "session"}
    for path, method, operation in operations(document):
        assert any(status.startswith("2") for status in operation["responses"]), (method, path)
        assert "401" in operation["responses"], (method, path)
        if (path, method) in PUBLIC:
            assert "security" not in operation, (method, path)
        elif path.startswith("/v1/"):  # OpenAI's API: an API token, never the session
            assert operation["security"] == [{"token": []}], (method, path)
            schema = operation["responses"]["401"]["content"]["application/json"]["schema"]
            assert schema["properties"]["error"]["$ref"].endswith("/OpenAIErrorDetail")
        else:
            assert operation["security"] == [{"token": []}, {"session": []}], (method, path)


async def test_with_accounts_every_reference_and_every_link_resolves(admin: Client) -> None:
    document = await spec(admin)
    schemas = document["components"]["schemas"]
    assert refs(document) == {f"#/components/schemas/{name}" for name in schemas}
    names = {operation["operationId"] for _, _, operation in operations(document)}
    links = [
        link
        for _, _, operation in operations(document)
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert links and {link["operationId"] for link in links} <= names


def body_schema(document: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    body = document["paths"][path][method]["requestBody"]
    assert body["required"] is True and set(body["content"]) == {"application/json"}
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema


async def test_a_new_password_is_described_as_eight_characters_or_more(admin: Client) -> None:
    document = await spec(admin)
    for path, field in [
        ("/api/auth/setup", "password"),
        ("/api/auth/signup", "password"),
        ("/api/auth/invite/accept", "password"),
        ("/api/auth/password", "new"),
        ("/api/admin/users", "password"),
    ]:
        assert body_schema(document, path)["properties"][field]["minLength"] == 8, path
    reset = body_schema(document, "/api/admin/users/{user_id}", "patch")["properties"]["password"]
    assert reset["anyOf"][0]["minLength"] == 8
    assert body_schema(document, "/api/auth/login")["properties"]["password"]["minLength"] == 1
    assert body_schema(document, "/api/auth/password")["properties"]["current"]["minLength"] == 1


async def test_a_post_without_fields_takes_a_required_empty_json_object(admin: Client) -> None:
    document = await spec(admin)
    for path in (
        "/api/auth/logout",
        "/api/conversations/{conversation_id}/restore",
    ):
        schema = body_schema(document, path)
        assert schema["properties"] == {} and schema["additionalProperties"] is False, path
    assert (await admin.post("/api/auth/logout", json={"all": True})).status_code == 400
    assert (await admin.post("/api/auth/logout", json={})).status_code == 200


async def test_the_change_feed_s_path_answers_other_methods_with_its_own_allow(
    admin: Client,
) -> None:
    response = await admin.patch("/api/conversations/changes", json={})
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


async def test_an_id_larger_than_any_row_s_is_not_found(admin: Client) -> None:
    huge = 2**64
    revoked = await admin.delete(f"/api/auth/tokens/{huge}")
    assert_error(revoked.status_code, await revoked.get_data(), 404, "NOT_FOUND")
    changed = await admin.patch(f"/api/admin/users/{huge}", json={})
    assert_error(changed.status_code, await changed.get_data(), 404, "NOT_FOUND")
    listed = await admin.get(f"/api/admin/users?after={huge}")
    assert listed.status_code == 200 and await listed.get_json() == []


async def test_the_change_feed_takes_only_times_with_an_offset(admin: Client) -> None:
    naive = await admin.get("/api/conversations/changes?since=2000-01-01T00:00:00")
    assert_error(naive.status_code, await naive.get_data(), 400, "INVALID_REQUEST")
    for since in ("0001-01-01T00:00:00%2B01:00", "2000-01-01t00:00:00z"):
        response = await admin.get(f"/api/conversations/changes?since={since}")
        assert response.status_code == 200, since


def schemathesis(
    service: Service, directory: Path, *options: str, config: str = ""
) -> subprocess.CompletedProcess[str]:
    """`schemathesis run` with every check against the running `service`; SCHEMATHESIS_SEED
    explores other seeds than the fixed one CI uses."""
    (directory / "schemathesis.toml").write_text(config)
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file=schemathesis.toml",
            "run",
            f"{service.url}/openapi.json",
            "--checks=all",
            "--phases=examples,coverage,fuzzing,stateful",
            "--max-examples=150",
            f"--seed={os.environ.get('SCHEMATHESIS_SEED', '20261201')}",
            "--workers=1",  # hypothesis's lambda introspection is not thread-safe on 3.11
            "--generation-database=none",
            "--no-color",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.e2e
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Property-based: every check schemathesis has, on every endpoint, against the real service
    without accounts."""
    # Any model: a schema-valid name the allow-list refuses is a deployment's policy, not the API's.
    with Service(fake.url, MODELS_ALLOWED="*") as service:
        run = schemathesis(service, tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "7 passed" in run.stdout or "No issues found" in run.stdout


# What schemathesis may not do to the account it tests as, and the ids it cannot guess.
ACCOUNTS_CONFIG = """
# A body over MAX_BODY_BYTES is refused before it is read, with 413: a rejection too.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429", "5xx"]

# Revoke a spare token, never the one this run authenticates with.
[[operations]]
include-name = "DELETE /api/auth/tokens/{{token_id}}"
parameters = {{ token_id = {token_id} }}

[[operations]]
include-name = "DELETE /api/admin/users/{{user_id}}/tokens/{{token_id}}"
parameters = {{ user_id = {admin_id}, token_id = {token_id} }}

# It revokes every token of the account (`revoke_tokens` is true unless sent false), this run's
# own too: every later request would be a 401. tests/auth/test_tokens.py tests it.
[[operations]]
include-name = "POST /api/auth/logout-everywhere"
enabled = false

# Change a spare user, never the admin this run acts as (disabled or demoted, it would make
# every later request a 401 or a 403).
[[operations]]
include-name = "PATCH /api/admin/users/{{user_id}}"
parameters = {{ user_id = {user_id} }}

[[operations]]
include-name = "DELETE /api/auth/sessions/{{session_id}}"
parameters = {{ session_id = "{session_id}" }}

[[operations]]
include-name = "DELETE /api/invites/{{invite_id}}"
parameters = {{ invite_id = "{invite_id}" }}

[[operations]]
include-name = "POST /api/conversations/{{conversation_id}}/restore"
parameters = {{ conversation_id = "{deleted_id}" }}

[[operations]]
include-name = "POST /api/conversations/{{conversation_id}}/messages/{{message_id}}/regenerate"
parameters = {{ conversation_id = "{conversation_id}", message_id = "{reply_id}" }}

[[operations]]
include-name = "GET /api/conversations/{{conversation_id}}/messages/{{message_id}}/events"
parameters = {{ conversation_id = "{conversation_id}", message_id = "{reply_id}" }}

[[operations]]
include-name = "POST /api/conversations/{{conversation_id}}/messages/{{message_id}}/stop"
parameters = {{ conversation_id = "{conversation_id}", message_id = "{reply_id}" }}

[[operations]]
include-name = "POST /api/conversations/{{conversation_id}}/messages/{{message_id}}/edit"
parameters = {{ conversation_id = "{conversation_id}", message_id = "{question_id}" }}

# Bodies valid or not by the server's state, which no schema can say, refused with 400
# INVALID_REQUEST: a `parent_id` that is no message of that conversation (pinned by
# tests/conversations/test_ownership.py), and no `email` for an invite bound to none.
[[operations]]
include-name = [
  "POST /api/conversations/{{conversation_id}}/messages",
  "POST /api/auth/invite/accept",
]
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "429", "5xx"
]
"""


def data_to_act_on(client: httpx.Client) -> dict[str, object]:
    """Things for schemathesis to act on, made as the admin: the ids ACCOUNTS_CONFIG names."""
    made: dict[str, object] = {}
    made["token_id"] = client.post("/api/auth/tokens", json={"name": "spare"}).json()["id"]
    made["admin_id"] = client.get("/api/auth/me").json()["id"]
    spare = {"email": "spare@example.com", "password": "a spare user's password"}
    made["user_id"] = client.post("/api/admin/users", json=spare).json()["id"]
    with httpx.Client(base_url=client.base_url) as browser:
        assert browser.post("/api/auth/login", json=ADMIN).status_code == 200
    sessions = client.get("/api/auth/sessions").json()
    made["session_id"] = next(s["id"] for s in sessions if not s["current"])
    made["invite_id"] = client.post("/api/invites", json={}).json()["id"]
    deleted = client.post("/api/conversations", json={"title": "deleted"}).json()["id"]
    assert client.delete(f"/api/conversations/{deleted}").status_code == 200
    made["deleted_id"] = deleted
    chat = client.post("/api/conversations", json={"title": "chat"}).json()["id"]
    sent = client.post(
        f"/api/conversations/{chat}/messages", json={"content": "Hello", "client_id": "c-1"}
    )
    assert sent.status_code == 200 and "event: done" in sent.text
    made["conversation_id"] = chat
    made["question_id"] = sent.headers["Quartchat-Message-Id"]
    made["reply_id"] = sent.headers["Quartchat-Reply-Id"]
    return made


@pytest.mark.e2e
def test_schemathesis_holds_every_endpoint_with_accounts_to_the_schema(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Property-based, with accounts: every check on every endpoint, as an admin's API token."""
    env = {
        "AUTH_MODE": "accounts",
        "ADMIN_EMAIL": ADMIN["email"],
        "ADMIN_PASSWORD": ADMIN["password"],
        "LOGIN_ATTEMPTS_PER_MINUTE": "100000",
        "MODELS_ALLOWED": "*",
    }
    with Service(fake.url, **env) as service, httpx.Client(base_url=service.url) as client:
        assert client.post("/api/auth/login", json=ADMIN).status_code == 200
        token = client.post("/api/auth/tokens", json={"name": "schemathesis"}).json()["token"]
        config = ACCOUNTS_CONFIG.format(**data_to_act_on(client))
        run = schemathesis(
            service, tmp_path, f"--header=Authorization: Bearer {token}", config=config
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: 51" in run.stdout and re.search(r"(\d+) generated, \1 passed", run.stdout)
