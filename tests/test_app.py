from __future__ import annotations

import orjson
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quartchat import __version__, create_app
from quartchat.config import Settings

from .conftest import assert_error, make_settings
from .service import ROOT

PROBE_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def test_factory_builds_independent_apps_with_the_three_blueprints() -> None:
    first, second = create_app(make_settings()), create_app(make_settings(openai_model="other"))
    assert first is not second
    assert {"health", "ui", "api"} <= set(first.blueprints)
    assert second.config["QUARTCHAT"].openai_model == "other"


def test_settings_read_the_documented_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_API_BASE", "http://localhost:11434/v1/")
    monkeypatch.setenv("OPENAI_MODEL", "llama3")
    monkeypatch.setenv("REQUEST_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("APP_PORT", "9000")
    settings = Settings(_env_file=None)
    assert settings.api_key == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert settings.openai_api_base == "http://localhost:11434/v1"
    assert (settings.openai_model, settings.request_timeout_seconds, settings.app_port) == (
        "llama3",
        5,
        9000,
    )
    assert not settings.needs_key


@pytest.mark.parametrize(("value", "is_set"), [("llama3", True), ("", False), (" ", False)])
def test_an_empty_openai_model_is_unset(
    monkeypatch: pytest.MonkeyPatch, value: str, is_set: bool
) -> None:
    monkeypatch.setenv("OPENAI_MODEL", value)
    settings = Settings(_env_file=None)
    assert settings.openai_model_set is is_set
    assert settings.openai_model == (value if is_set else "gpt-4o-mini")


def test_defaults_match_the_documentation() -> None:
    settings = Settings(_env_file=None)
    assert settings.openai_api_base == "https://api.openai.com/v1"
    assert settings.openai_model == "gpt-4o-mini"
    assert not settings.openai_model_set  # the default model is then one the upstream lists
    assert settings.request_timeout_seconds == 60
    assert (settings.app_host, settings.app_port) == ("0.0.0.0", 8333)
    assert settings.needs_key  # OpenAI's own API without a key cannot work


def test_accounts_are_on_by_default_and_without_them_the_service_stays_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).accounts
    monkeypatch.setenv("AUTH_MODE", "none")
    assert Settings(_env_file=None).app_host == "127.0.0.1"
    monkeypatch.setenv("APP_HOST", "0.0.0.0")
    assert Settings(_env_file=None).app_host == "0.0.0.0"  # said explicitly: __main__ refuses it


def test_lists_are_comma_separated_and_blanks_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", " 10.0.0.0/8, 192.0.2.1 ,")
    monkeypatch.setenv("ALLOWED_HOSTS", "chat.example.com")
    monkeypatch.setenv("ADMIN_EMAIL", "")
    monkeypatch.setenv("DATABASE_URL", "")
    settings = Settings(_env_file=None)
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
    assert settings.allowed_hosts == ["chat.example.com"]
    assert settings.admin_email is None and settings.database_url is None


def test_the_example_env_file_is_valid_and_means_the_defaults() -> None:
    example = Settings(_env_file=ROOT / ".env.example")
    assert example.accounts and example.signup_policy == "closed"
    assert example.secret_key is None and example.database_url is None and example.redis is None
    assert example.trusted_proxies == [] and example.admin_email is None
    assert not example.openai_model_set  # the default model: one the upstream lists


def test_settings_reject_a_base_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_BASE"):
        make_settings(openai_api_base="localhost:11434")


async def test_health_is_ok_with_version(client: Client) -> None:
    response = await client.get("/health")
    assert await response.get_json() == {"status": "ok", "version": __version__}


async def test_page_is_served_with_a_strict_content_security_policy(client: Client) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await response.get_data(as_text=True)
    assert "<script" in page and "app.js" in page


@pytest.mark.parametrize("incoming", ["abc-123", "trace.id:7_x"])
async def test_a_sane_request_id_is_echoed(client: Client, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["", "has space", "x" * 200, "<script>"])
async def test_an_insane_request_id_is_replaced(client: Client, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] != incoming
    assert len(response.headers["X-Request-ID"]) == 32


async def test_every_route_keeps_the_error_shape_and_request_id(app: Quart, client: Client) -> None:
    """Walks the url map: whatever a route is asked, errors have our shape (OpenAI's under
    /v1) and ids travel."""
    probed = 0
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<path:filename>", "no-such-file.js")
        for method in PROBE_METHODS:
            # quart.typing's protocol wrongly makes `json` required; the client has a default.
            response = await client.open(  # type: ignore[call-arg]
                path, method=method, data=b"{not json", headers={"X-Request-ID": f"walk-{probed}"}
            )
            body = await response.get_data()
            assert response.headers["X-Request-ID"] == f"walk-{probed}", (method, path)
            if response.status_code >= 400 and path.startswith("/v1/"):
                # OpenAI's API, OpenAI's error shape (the id travels in the header only).
                error = orjson.loads(body)["error"]
                assert set(error) == {"message", "type", "param", "code"}, (method, path)
                assert isinstance(error["message"], str) and error["message"]
            elif response.status_code >= 400:
                assert_error(
                    response.status_code,
                    body,
                    response.status_code,
                    orjson.loads(body)["error"]["code"],
                )
                assert orjson.loads(body)["error"]["request_id"] == f"walk-{probed}"
            probed += 1
    assert probed >= 5 * len(PROBE_METHODS)
    response = await client.get("/no/such/route")
    assert_error(response.status_code, await response.get_data(), 404, "NOT_FOUND")
    response = await client.delete("/api/chat")
    assert_error(response.status_code, await response.get_data(), 405, "METHOD_NOT_ALLOWED")


async def test_an_unexpected_failure_is_a_500_without_a_traceback(
    app: Quart, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom() -> None:
        raise RuntimeError("secret internals sk-live-abcdefgh12345")

    monkeypatch.setattr(app.extensions["upstream"], "models", boom)
    response = await client.get("/api/models")
    body = await response.get_data()
    assert_error(response.status_code, body, 500, "INTERNAL_ERROR")
    assert b"Traceback" not in body and b"secret internals" not in body


async def test_static_files_are_revalidated_so_upgrades_never_mix_modules(client: Client) -> None:
    first = await client.get("/static/app.js")
    assert first.status_code == 200
    assert not first.cache_control.max_age  # Quart's default would be 12 hours
    etag = first.headers["ETag"]
    again = await client.get("/static/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304
