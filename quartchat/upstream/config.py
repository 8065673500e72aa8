"""The upstreams quartchat may route to: the environment's one, and those `UPSTREAMS_FILE` names.

`UPSTREAMS_FILE` is TOML, one `[[upstreams]]` table per upstream (docs/gateway.md, "Upstreams"):

    [[upstreams]]
    name = "ollama"
    base_url = "http://127.0.0.1:11434/v1"
    aliases = { "local" = "llama3.2:3b" }

Keys are never in the file (nor in the database): `api_key_env` names the environment variable
that holds an upstream's key. This module is the one reader of those named variables (config.py
stays the reader of quartchat's own settings); it reads them once, when the file is loaded at
start, and a variable that is named but unset stops the start with a message saying which.

The single-upstream settings (OPENAI_API_BASE, OPENAI_API_KEY, OPENAI_MODEL, MODELS_ALLOWED,
REQUEST_TIMEOUT_SECONDS, UPSTREAM_MAX_CONNECTIONS) make the upstream named "default", as before.
It stays alongside the file's upstreams unless the file defines one named "default" itself (which
then replaces it), or it cannot work: OPENAI_API_BASE is OpenAI's and OPENAI_API_KEY is unset
while the file names upstreams of its own.

Order matters: the default upstream (the one with `default = true`, else the one named "default",
else the file's first) comes first, then the others as written, the environment's before the
file's. A model offered by several goes to the first of them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import OPENAI_HOSTS, Settings

if TYPE_CHECKING:
    from ..usage.meter import Price

DEFAULT = "default"
"""The name of the upstream the single-upstream settings describe."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UpstreamsFileError(Exception):
    """UPSTREAMS_FILE cannot be used: the message says which upstream and which field."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream, resolved: what its client and the registry need.

    `models`: the allow-list (None: what its `/models` lists). `aliases`: public name -> the
    upstream's model id. `from_env`: the upstream of the single-upstream settings, whose models
    OPENAI_MODEL and MODELS_ALLOWED decide."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_connections: int = 1000
    models: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    prices: dict[str, Price] = field(default_factory=dict)
    default: bool = False
    from_env: bool = False

    @property
    def needs_key(self) -> bool:
        """OpenAI itself always wants a key; local servers (Ollama, llama.cpp, vLLM) usually don't."""
        return self.api_key is None and urlsplit(self.base_url).hostname in OPENAI_HOSTS

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream:
        """The upstream of OPENAI_API_BASE and OPENAI_API_KEY (named "default")."""
        return cls(
            name=DEFAULT,
            base_url=settings.openai_api_base,
            api_key=settings.api_key,
            timeout_seconds=settings.request_timeout_seconds,
            max_connections=settings.upstream_max_connections,
            from_env=True,
        )


class PriceEntry(BaseModel):
    """A model's price in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class UpstreamEntry(BaseModel):
    """One `[[upstreams]]` table as written."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base_url: str
    api_key_env: str | None = None
    models: list[Annotated[str, Field(min_length=1)]] | None = None
    aliases: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    timeout_seconds: float | None = Field(None, gt=0)
    max_connections: int | None = Field(None, gt=0)
    prices: dict[str, PriceEntry] = Field(default_factory=dict)
    default: bool = False

    @field_validator("name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _an_http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as https://api.openai.com/v1")
        return value.strip().rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the NAME of an environment variable (such as OPENAI_KEY_TEAM), "
                "not the key itself"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases_named(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not public.strip() for public in value):
            raise ValueError("an alias's name must not be empty")
        return value


class UpstreamsFile(BaseModel):
    """The whole file: its `[[upstreams]]`."""

    model_config = ConfigDict(extra="forbid")

    upstreams: list[UpstreamEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamsFile:
        names = [entry.name for entry in self.upstreams]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"upstream {twice[0]!r} is defined more than once")
        defaults = [entry.name for entry in self.upstreams if entry.default]
        if len(defaults) > 1:
            raise ValueError(
                f"default = true is set on {len(defaults)} upstreams "
                f"({', '.join(defaults)}); at most one may be the default"
            )
        aliased: dict[str, str] = {}
        for entry in self.upstreams:
            for public in entry.aliases:
                if public in aliased:
                    raise ValueError(
                        f"the alias {public!r} is defined by both upstream {aliased[public]!r} "
                        f"and upstream {entry.name!r}"
                    )
                aliased[public] = entry.name
        return self


def load(settings: Settings, environ: dict[str, str] | None = None) -> list[Upstream]:
    """Every upstream, the default first then in the order written (see the module's docstring).

    `environ`: where `api_key_env` names are looked up (tests pass a dict; else `os.environ`).
    Raises `UpstreamsFileError` naming the upstream and field when the file cannot be used.
    """
    env = Upstream.from_settings(settings)
    path = settings.upstreams_file
    if path is None:
        return [env]
    upstreams = [
        _resolve(entry, settings, os.environ if environ is None else environ, path)
        for entry in parse(path).upstreams
    ]
    names = {upstream.name for upstream in upstreams}
    if DEFAULT not in names and not env.needs_key:
        upstreams.insert(0, env)
    chosen = next((u for u in upstreams if u.default), None)
    chosen = chosen or next((u for u in upstreams if u.name == DEFAULT), upstreams[0])
    return [chosen, *(u for u in upstreams if u is not chosen)]


def parse(path: Path) -> UpstreamsFile:
    """The file as written, checked; raises `UpstreamsFileError`."""
    where = f"UPSTREAMS_FILE ({path})"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UpstreamsFileError(f"{where} cannot be read: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UpstreamsFileError(f"{where} is not valid TOML: {error}") from None
    try:
        return UpstreamsFile.model_validate(data)
    except ValidationError as error:
        raise UpstreamsFileError(f"{where}: " + "; ".join(_explain(data, error))) from None


def _explain(data: dict[str, Any], error: ValidationError) -> list[str]:
    """pydantic's errors said as an operator reads them: upstream 'x': field: what is wrong."""
    said = []
    tables = data.get("upstreams")
    for problem in error.errors():
        location = list(problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "is not a setting of an upstream (a typo?)"
        if location[:1] == ["upstreams"] and len(location) > 1 and isinstance(location[1], int):
            index = location[1]
            table = tables[index] if isinstance(tables, list) and index < len(tables) else None
            name = table.get("name") if isinstance(table, dict) else None
            who = f"upstream {name!r}" if isinstance(name, str) else f"upstream #{index + 1}"
            path = ".".join(str(part) for part in location[2:])
            said.append(f"{who}: {path}: {message}" if path else f"{who}: {message}")
        elif location == ["upstreams"] and problem["type"] == "missing":
            said.append("no [[upstreams]] tables")
        else:
            path = ".".join(str(part) for part in location)
            said.append(f"{path}: {message}" if path else message)
    return said


def _resolve(entry: UpstreamEntry, settings: Settings, environ: Any, path: Path) -> Upstream:
    # Here, not at the top: usage.meter imports the relay, which imports the upstream's client.
    from ..usage.meter import Price

    where = f"UPSTREAMS_FILE ({path}): upstream {entry.name!r}: api_key_env"
    key = None
    if entry.api_key_env is not None:
        key = environ.get(entry.api_key_env) or None
        if key is None:
            raise UpstreamsFileError(
                f"{where}: the environment variable {entry.api_key_env} is not set"
            )
    upstream = Upstream(
        name=entry.name,
        base_url=entry.base_url,
        api_key=key,
        timeout_seconds=entry.timeout_seconds or settings.request_timeout_seconds,
        max_connections=entry.max_connections or settings.upstream_max_connections,
        models=tuple(dict.fromkeys(entry.models)) if entry.models is not None else None,
        aliases=dict(entry.aliases),
        prices={m: Price(p.input, p.output) for m, p in entry.prices.items()},
        default=entry.default,
    )
    if upstream.needs_key:
        raise UpstreamsFileError(
            f"{where}: OpenAI's API needs a key; name the environment variable that holds it"
        )
    return upstream
