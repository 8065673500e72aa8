"""UPSTREAMS_FILE: what a good file makes, and what a bad one says at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from quartchat import __main__ as quartchat_main
from quartchat import create_app
from quartchat.upstream.config import DEFAULT, UpstreamsFileError, load
from quartchat.usage.meter import Price

from ..conftest import UPSTREAM, make_settings

GOOD = """
[[upstreams]]
name = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_KEY_TEAM"
models = ["gpt-4o", "gpt-4o-mini"]
timeout_seconds = 30
max_connections = 50
prices = { "gpt-4o" = { input = 2.5, output = 10 } }

[[upstreams]]
name = "ollama"
base_url = "http://127.0.0.1:11434/v1"
aliases = { "local" = "llama3.2:3b" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "upstreams.toml"
    path.write_text(text)
    return path


def test_a_good_file_adds_its_upstreams_after_the_environment_s_in_order(tmp_path: Path) -> None:
    settings = make_settings(upstreams_file=write(tmp_path, GOOD), request_timeout_seconds=7)
    default, openai, ollama = load(settings, {"OPENAI_KEY_TEAM": "sk-team-key"})
    assert (default.name, default.base_url, default.from_env) == (DEFAULT, UPSTREAM, True)
    assert openai.name == "openai"
    assert openai.base_url == "https://api.openai.com/v1"
    assert openai.api_key == "sk-team-key"
    assert (openai.timeout_seconds, openai.max_connections) == (30, 50)
    assert openai.models == ("gpt-4o", "gpt-4o-mini")
    assert openai.prices == {"gpt-4o": Price(2.5, 10)}
    assert ollama.api_key is None and ollama.models is None
    assert ollama.aliases == {"local": "llama3.2:3b"}
    assert ollama.timeout_seconds == 7  # REQUEST_TIMEOUT_SECONDS when the file says none
    assert "sk-team-key" not in repr(openai)


def test_the_upstream_marked_default_comes_first(tmp_path: Path) -> None:
    text = GOOD.replace('name = "ollama"', 'name = "ollama"\ndefault = true')
    settings = make_settings(upstreams_file=write(tmp_path, text))
    names = [u.name for u in load(settings, {"OPENAI_KEY_TEAM": "k"})]
    assert names == ["ollama", DEFAULT, "openai"]


def test_an_upstream_named_default_in_the_file_replaces_the_environment_s(tmp_path: Path) -> None:
    text = GOOD.replace('name = "ollama"', 'name = "default"')
    settings = make_settings(upstreams_file=write(tmp_path, text))
    upstreams = load(settings, {"OPENAI_KEY_TEAM": "k"})
    assert [(u.name, u.from_env) for u in upstreams] == [(DEFAULT, False), ("openai", False)]
    assert upstreams[0].base_url == "http://127.0.0.1:11434/v1"


def test_the_environment_s_upstream_is_left_out_when_it_has_no_key_for_openai(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        upstreams_file=write(tmp_path, GOOD),
        openai_api_key=None,
        openai_api_base="https://api.openai.com/v1",
    )
    assert [u.name for u in load(settings, {"OPENAI_KEY_TEAM": "k"})] == ["openai", "ollama"]


def test_without_a_file_there_is_the_environment_s_upstream_alone() -> None:
    (only,) = load(make_settings(upstreams_file=None), {})
    assert (only.name, only.from_env) == (DEFAULT, True)


BAD = [
    ("[[upstreams]]\nbase_url = 'http://x/v1'\n", "upstream #1: name: Field required"),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'ftp://x/v1'\n",
        "upstream 'x': base_url: must be an http(s) URL",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\napi_key = 'sk-1'\n",
        "upstream 'x': api_key: is not a setting of an upstream",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\napi_key_env = 'sk-live-123'\n",
        "upstream 'x': api_key_env: must be the NAME of an environment variable",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\napi_key_env = 'NOT_SET_HERE'\n",
        "upstream 'x': api_key_env: the environment variable NOT_SET_HERE is not set",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'https://api.openai.com/v1'\n",
        "upstream 'x': api_key_env: OpenAI's API needs a key",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\ntimeout_seconds = 0\n",
        "upstream 'x': timeout_seconds: Input should be greater than 0",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\n"
        "prices = { m = { input = -1, output = 1 } }\n",
        "upstream 'x': prices.m.input: Input should be greater than or equal to 0",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\ndefault = true\n"
        "[[upstreams]]\nname = 'y'\nbase_url = 'http://y/v1'\ndefault = true\n",
        "default = true is set on 2 upstreams (x, y)",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\n"
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://y/v1'\n",
        "upstream 'x' is defined more than once",
    ),
    (
        "[[upstreams]]\nname = 'x'\nbase_url = 'http://x/v1'\naliases = { a = 'm' }\n"
        "[[upstreams]]\nname = 'y'\nbase_url = 'http://y/v1'\naliases = { a = 'n' }\n",
        "the alias 'a' is defined by both upstream 'x' and upstream 'y'",
    ),
    ("[[upstreams]\nname = 'x'\n", "is not valid TOML"),
    ("", "no [[upstreams]] tables"),
]


@pytest.mark.parametrize(("text", "said"), BAD)
def test_a_bad_file_stops_the_start_naming_the_upstream_and_field(
    tmp_path: Path, text: str, said: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UpstreamsFileError) as raised:
        load(make_settings(upstreams_file=path), {})
    assert str(raised.value).startswith(f"UPSTREAMS_FILE ({path})")
    assert said in str(raised.value)


def test_a_missing_file_is_said_at_start_by_the_app_factory(tmp_path: Path) -> None:
    with pytest.raises(UpstreamsFileError, match="cannot be read"):
        create_app(make_settings(upstreams_file=tmp_path / "nowhere.toml"))


def test_quartchat_serve_says_what_is_wrong_in_one_line_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[[upstreams]]\nname = 'x'\nbase_url = 'nowhere'\n")
    monkeypatch.setattr(quartchat_main, "get_settings", lambda: make_settings(upstreams_file=path))
    monkeypatch.setattr(quartchat_main, "serve", lambda settings: pytest.fail("it served"))
    with pytest.raises(SystemExit) as exited:
        quartchat_main.main(["serve"])
    assert str(exited.value.code).startswith(f"quartchat: UPSTREAMS_FILE ({path}): upstream 'x'")
