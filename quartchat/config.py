"""Settings: the one place that reads the environment (and an optional `.env` file)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

OPENAI_HOSTS = frozenset({"api.openai.com"})


class Settings(BaseSettings):
    """Everything quartchat can be told, each field named after its environment variable."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    openai_api_key: SecretStr | None = None
    openai_api_base: str = "https://api.openai.com/v1"
    # Unset: the first model the upstream lists (upstream/client.py, `default_model`).
    openai_model: str = "gpt-4o-mini"
    request_timeout_seconds: float = Field(60.0, gt=0)
    app_host: str = "0.0.0.0"
    app_port: int = Field(8333, ge=1, le=65535)

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    sse_ping_seconds: float = Field(15.0, gt=0)
    models_cache_seconds: float = Field(300.0, ge=0)
    upstream_max_connections: int = Field(1000, gt=0)
    log_level: str = "INFO"
    # Host names the service answers to besides loopback ones (comma-separated; `.example.com`
    # for a domain and its subdomains). Empty: any. See quartchat/guards.py.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Serving (python -m quartchat): see docs/deploy.md.
    # The HTTP server (quartchat/serving/): hypercorn, or uvicorn on uvloop and httptools.
    server: Literal["hypercorn", "uvicorn"] = "hypercorn"
    app_workers: int = Field(1, ge=1)
    shutdown_grace_seconds: float = Field(10.0, ge=0)

    # Data: an SQLite file in DATA_DIR unless DATABASE_URL names a PostgreSQL server.
    data_dir: Path = Path("data")
    database_url: SecretStr | None = None  # may hold a password
    # Shared state between processes and hosts (stream counts, login throttles, run logs, stops):
    # `redis://[:PASSWORD@]host:6379/0` or `rediss://…`. Unset: each process on its own.
    redis_url: SecretStr | None = None  # may hold a password

    # Accounts (docs/deploy.md, "Accounts"). `none`: no accounts, loopback only.
    auth_mode: Literal["accounts", "none"] = "accounts"
    auth_none_allow_network: bool = False  # AUTH_MODE=none on a non-loopback address, knowingly
    secret_key: SecretStr | None = None  # signs cookies; generated once into DATA_DIR if unset
    signup_policy: Literal["closed", "invite", "approval", "open"] = "closed"
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # Addresses (or networks) of reverse proxies whose X-Forwarded-* and trusted header count.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    auth_trusted_header: str | None = None  # e.g. Remote-Email, set by an identity proxy
    # What the trusted header's value must match in full (a regular expression), when the proxy
    # sends user names rather than emails. Unset: an email address, the rule sign-up uses.
    auth_trusted_header_pattern: str | None = None
    admin_email: str | None = None  # with ADMIN_PASSWORD: the first admin, made at start
    admin_password: SecretStr | None = None
    login_attempts_per_minute: int = Field(10, ge=1)
    # Imports (POST /api/import): the largest body, and the bytes a user may import per day.
    import_max_bytes: int = Field(50 * 1024 * 1024, gt=0)
    import_bytes_per_day: int = Field(500 * 1024 * 1024, gt=0)

    # Per-user limits (docs/api.md, "Limits"). Streams: unset means 4 with accounts, none without;
    # 0 turns the limit off. Models: empty means what the upstream's /models lists; `*` any.
    max_streams_per_user: int | None = Field(None, ge=0)
    models_allowed: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_tokens_limit: int | None = Field(None, gt=0)
    max_reply_seconds: float = Field(600.0, gt=0)

    # Runs (docs/api.md, "Replies that outlive the connection"): how long an ended reply's event
    # log stays in memory for readers that reconnect, and the most that ended logs may hold.
    run_log_retention_seconds: float = Field(60.0, ge=0)
    run_log_max_bytes: int = Field(64 * 1024 * 1024, ge=0)

    # The gateway (docs/gateway.md). Upstreams besides the one above: a TOML file naming them.
    upstreams_file: Path | None = None
    # The usage ledger: one row per request (no text), written in batches, rolled up per day.
    usage_ledger: bool = True
    usage_flush_seconds: float = Field(1.0, gt=0)
    usage_retention_days: int = Field(90, ge=1)
    # Every user's limits unless an administrator sets others (unset: no limit).
    default_requests_per_minute: int | None = Field(None, ge=1)
    default_tokens_per_day: int | None = Field(None, ge=1)
    default_cost_per_month: float | None = Field(None, gt=0)  # US dollars
    # GET /metrics answers loopback clients, and others that send this token as a bearer.
    metrics_token: SecretStr | None = None
    # Where each worker process keeps its metrics for the others to add up: `python -m quartchat`
    # sets it itself when APP_WORKERS > 1 (a directory it creates and removes).
    prometheus_multiproc_dir: Path | None = None

    @field_validator(
        "openai_api_key",
        "database_url",
        "redis_url",
        "secret_key",
        "admin_password",
        "admin_email",
        "auth_trusted_header",
        "auth_trusted_header_pattern",
        "metrics_token",
        "prometheus_multiproc_dir",
        "upstreams_file",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `OPENAI_API_KEY=` in a .env file means "no key", not "an empty key".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "max_streams_per_user",
        "max_tokens_limit",
        "default_requests_per_minute",
        "default_tokens_per_day",
        "default_cost_per_month",
        mode="before",
    )
    @classmethod
    def _blank_number_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("allowed_hosts", "trusted_proxies", "models_allowed", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("auth_trusted_header_pattern")
    @classmethod
    def _a_regular_expression(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(
                    f"AUTH_TRUSTED_HEADER_PATTERN is not a regular expression: {error}"
                ) from None
        return value

    @field_validator("openai_api_base")
    @classmethod
    def _base_is_http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "OPENAI_API_BASE must be an http(s) URL such as https://api.openai.com/v1"
            )
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _no_accounts_means_loopback(self) -> Settings:
        # Without accounts the service must not be reachable from the network by default.
        if self.auth_mode == "none" and "app_host" not in self.model_fields_set:
            self.app_host = "127.0.0.1"
        return self

    @model_validator(mode="after")
    def _blank_model_is_unset(self) -> Settings:
        # `OPENAI_MODEL=` (as .env.example has it) means "one the upstream lists", not a model "".
        if not self.openai_model.strip():
            self.openai_model = Settings.model_fields["openai_model"].default
            self.model_fields_set.discard("openai_model")
        return self

    @property
    def accounts(self) -> bool:
        return self.auth_mode == "accounts"

    @property
    def stream_limit(self) -> int | None:
        """Streams one user may hold at once (None: no limit)."""
        if self.max_streams_per_user is None:
            return 4 if self.accounts else None
        return self.max_streams_per_user or None

    @property
    def redis(self) -> str | None:
        """REDIS_URL's value (None: no Redis); never log it, it may hold a password."""
        return self.redis_url.get_secret_value() if self.redis_url else None

    @property
    def api_key(self) -> str | None:
        return self.openai_api_key.get_secret_value() if self.openai_api_key else None

    @property
    def openai_model_set(self) -> bool:
        """Whether OPENAI_MODEL was given; if not, the default model is one the upstream lists."""
        return "openai_model" in self.model_fields_set

    @property
    def needs_key(self) -> bool:
        """OpenAI itself always wants a key; local servers (Ollama, llama.cpp, vLLM) usually don't."""
        return self.api_key is None and urlsplit(self.openai_api_base).hostname in OPENAI_HOSTS


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
