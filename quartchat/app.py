"""The application factory."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import httpx
from quart import Quart, Request, Response, current_app, g, request
from redis.asyncio import Redis
from werkzeug.datastructures import Headers
from werkzeug.routing import Rule

from .accesslog import AccessRecord
from .auth.accounts import Accounts
from .auth.bootstrap import backups, url_of
from .auth.cookies import NoSessions, SessionCookies, secret_key
from .auth.devices import Devices
from .auth.gate import admit
from .auth.limits import counter
from .auth.passwords import Passwords
from .auth.principal import Authenticator, Networks, PrincipalCache
from .blueprints import admin, api, auth, conversations, health, metrics, ui, usage, v1
from .compression import Compressor
from .config import Settings, get_settings
from .conversations import turns
from .db import Database
from .db.migrate import migrate
from .errors import register_error_handlers
from .guards import HostCheck, check_cross_site, check_host, require_json
from .openapi import init_openapi
from .runs.control import RedisStops, Runs
from .runs.memory import MemoryLog
from .runs.redis import RedisLog, readers_client
from .runs.redis import client as redis_client
from .streaming.watch import LiveStreams
from .upstream import config as upstream_config
from .upstream.models import ModelPolicy
from .upstream.registry import Registry
from .usage import budgets
from .usage.ledger import Ledger, prune
from .usage.limits import RedisStreamSlots, stream_slots
from .usage.metrics import Metrics
from .usage.revocation import watch_credentials

HOUSEKEEPING_SECONDS = 60.0
PURGE_AFTER = timedelta(minutes=10)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# 'report-sample' only adds the first 40 characters of blocked inline code to a CSP report.
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'report-sample'; style-src 'self' 'report-sample'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


IMPORT_PATH = "/api/import"


class BoundedRequest(Request):
    """A request whose body may be up to MAX_BODY_BYTES, except an import's (a whole history):
    up to IMPORT_MAX_BYTES (`import_max_bytes`, set per app by `bounded_request`).

    The bound is fixed when the request is made, before its body starts arriving: a larger one
    set in the view would come after the first bytes were already refused.
    """

    import_max_bytes = 50 * 1024 * 1024

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        importing = path == IMPORT_PATH and kwargs.get("max_content_length") is not None
        if importing:
            kwargs["max_content_length"] = self.import_max_bytes
        super().__init__(method, scheme, path, *args, **kwargs)
        if importing:
            self.max_content_length = self.import_max_bytes  # what the 413's message names


def bounded_request(import_max_bytes: int) -> type[BoundedRequest]:
    """The request class of an app whose imports may be up to `import_max_bytes`."""
    return type("BoundedRequest", (BoundedRequest,), {"import_max_bytes": import_max_bytes})


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    check_upstream: bool | None = None,
) -> Quart:
    """Build the app. `transport` replaces the upstream HTTP transport (tests pass respx's).

    `check_upstream`: read the upstream's model list at start, in the background (the log then
    says which default model is used, or that OPENAI_MODEL is not listed). By default only with
    the real transport: a test's fake would see a request it did not ask for.
    """
    settings = settings or get_settings()
    app = Quart(__name__)
    app.request_class = bounded_request(settings.import_max_bytes)
    app.config["QUARTCHAT"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    # The page's ES modules import each other by plain URL (a versioned import map would need an
    # inline script, which the CSP forbids): revalidate every time (a 304 via ETag), so after an
    # upgrade a browser never runs a mix of old and new modules.
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 0
    configure_logging(settings.log_level)
    app.extensions["streams"] = LiveStreams(
        settings.sse_ping_seconds, settings.request_timeout_seconds, settings.max_reply_seconds
    )
    redis = _redis(settings)
    app.extensions["redis"] = redis
    app.extensions["slots"] = slots = stream_slots(settings.stream_limit, redis)
    app.extensions["metrics"] = meters = Metrics(settings.prometheus_multiproc_dir)
    app.extensions["sinks"] = (*app.extensions.get("sinks", ()), meters)

    @app.while_serving
    async def _shared_state() -> AsyncGenerator[None, None]:
        yield
        if isinstance(slots, RedisStreamSlots):
            await slots.aclose()
        if redis is not None:
            await redis.aclose()

    # Read now, so that a bad UPSTREAMS_FILE stops the start with its message.
    upstreams = upstream_config.load(settings)

    @app.while_serving
    async def _upstream_client() -> AsyncGenerator[None, None]:
        registry = Registry.build(settings, upstreams, transport)
        upstream = registry.default
        app.extensions["upstream"] = upstream
        app.extensions["models"] = ModelPolicy(registry)
        app.extensions["upstreams"] = registry
        check = transport is None if check_upstream is None else check_upstream
        # In the background, bounded by the request timeout: a slow or absent upstream neither
        # delays nor stops the start.
        checking = asyncio.get_running_loop().create_task(registry.check()) if check else None
        app.extensions["upstream_check"] = checking  # tests wait for it
        yield
        if checking is not None:
            checking.cancel()
        await registry.aclose()

    init_openapi(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(ui.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(v1.blueprint)
    app.register_blueprint(metrics.blueprint)
    authenticator = _accounts(app, settings) if settings.accounts else None
    budgets.install(app, settings, app.extensions.get("db"), redis)
    register_error_handlers(app)
    hosts = HostCheck(settings.allowed_hosts, loopback_default=not settings.accounts)

    @app.before_request
    async def _guard() -> Response | None:
        # Read once and handed on: each read of `request` goes through its context proxy.
        headers, method, rule = request.headers, request.method, request.url_rule
        _start_access_record(headers, method, rule)
        check_host(hosts, headers)
        check_cross_site(method, headers)
        if rule is not None:  # an unknown route is a 404 whatever its body
            require_json(method, headers)
        if authenticator is None or (rule is not None and rule.endpoint == metrics.ENDPOINT):
            return None  # /metrics checks its own token, which is no account's
        return await admit(authenticator)

    app.after_request(_finish_response)
    app.after_request(Compressor().compress)  # runs first: the last added runs first
    return app


def _accounts(app: Quart, settings: Settings) -> Authenticator:
    """Accounts on a database: the cookie, the credential parser, the service the views call."""
    networks = Networks(settings.trusted_proxies)
    networks.warn_if_wide(bool(settings.auth_trusted_header))
    cookies = SessionCookies(app, settings.cookie_secure, networks)
    app.session_interface = NoSessions()
    url = url_of(settings)
    db = Database.open(url)
    db.time_writes(app.extensions["metrics"].db_write)
    cache = PrincipalCache()
    app.extensions["counter"] = rate_counter = counter(db, app.extensions["redis"])
    accounts = Accounts(settings, db, Passwords(), cache, rate_counter)
    authenticator = Authenticator(
        db,
        cookies,
        networks,
        settings.auth_trusted_header,
        accounts.user_from_header,
        cache,
        header_pattern=settings.auth_trusted_header_pattern,
    )
    devices = Devices(settings.cookie_secure, networks)
    redis: Redis | None = app.extensions["redis"]
    local = MemoryLog(settings.run_log_retention_seconds, settings.run_log_max_bytes)
    events: MemoryLog | RedisLog = local
    if redis is not None and settings.redis is not None:
        # Readers' blocking XREADs, on connections of their own: at most one per client
        # connection, which the upstream's pool size bounds in practice.
        blocking = readers_client(settings.redis, settings.upstream_max_connections)
        events = RedisLog(redis, blocking, local, ping_seconds=settings.sse_ping_seconds)
    runs = Runs(
        db,
        app.extensions["streams"],
        events,
        stops=RedisStops(redis) if redis is not None else None,
        # Without Redis, readers in other workers follow the saved text: save it more often.
        checkpoint_seconds=(
            1.0 if settings.app_workers > 1 and redis is None else turns.CHECKPOINT_SECONDS
        ),
    )
    app.extensions.update(db=db, accounts=accounts, networks=networks, devices=devices, runs=runs)
    # The usage ledger needs the database: without accounts nothing is recorded.
    ledger = Ledger(db, settings.usage_flush_seconds) if settings.usage_ledger else None
    if ledger is not None:
        app.extensions["ledger"] = ledger
        app.extensions["sinks"] = (*app.extensions.get("sinks", ()), ledger)

    @app.while_serving
    async def _database() -> AsyncGenerator[None, None]:
        # A no-op at head: `quartchat` migrated before it started the workers.
        await migrate(url, backups(settings))
        app.secret_key = secret_key(
            settings.secret_key.get_secret_value() if settings.secret_key else None,
            settings.data_dir,
        )
        loop = asyncio.get_running_loop()
        chores = loop.create_task(_housekeeping(db, settings.usage_retention_days))
        if ledger is not None:
            ledger.start()
        credentials = loop.create_task(watch_credentials(db, app.extensions["streams"]))
        yield
        chores.cancel()
        credentials.cancel()
        await runs.close(settings.shutdown_grace_seconds + 1)  # their text is saved first
        if isinstance(events, RedisLog):
            await events.aclose()  # the last runs' ends, to readers elsewhere
        if ledger is not None:
            await ledger.close()  # the last requests' rows, the runs' just ended included
        await db.close()

    app.register_blueprint(auth.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(conversations.blueprint)
    app.register_blueprint(usage.blueprint)
    return authenticator


def _redis(settings: Settings) -> Redis | None:
    """The app's one Redis client (REDIS_URL), or None. It connects on first use: a Redis that is
    away at start delays nothing (what is counted in it is counted per process meanwhile)."""
    url = settings.redis
    if url is None:
        return None
    return redis_client(url)


async def _housekeeping(db: Database, retention_days: int) -> None:
    """Every minute: replies of a process that died become `interrupted`, conversations
    deleted more than a few minutes ago (past their Undo) are purged, and the usage ledger's raw
    rows older than USAGE_RETENTION_DAYS are deleted."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            await turns.housekeeping(db, purge_after=PURGE_AFTER)
            await prune(db, retention_days, time.time_ns() // 1_000_000)
        except Exception as exc:  # the database is away for a while: the next round retries
            logging.getLogger("quartchat").warning("housekeeping failed: %s", type(exc).__name__)


def _start_access_record(headers: Headers, method: str, rule: Rule | None) -> AccessRecord:
    incoming = headers.get("X-Request-ID", "")
    # 32 hex digits, as a UUID's without its version bits: no UUID object to build.
    request_id = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)
    g.request_id = request_id
    g.access = access = AccessRecord(
        request_id,
        method,
        request.path,
        rule=rule.rule if rule is not None else "",
        observer=current_app.extensions["metrics"].access,
    )
    return access


async def _finish_response(response: Response) -> Response:
    access: AccessRecord | None = g.get("access")
    if access is None:  # a request that failed before `before_request` ran
        access = _start_access_record(request.headers, request.method, request.url_rule)
    headers = response.headers
    # Added, not set: set() first looks for each to replace, and no view sends these.
    headers.add("X-Request-ID", access.request_id)
    headers.add("X-Content-Type-Options", "nosniff")
    headers.add("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        headers["Content-Security-Policy"] = PAGE_CSP
        headers["X-Frame-Options"] = "DENY"
    if not access.streaming:  # a stream logs itself when it ends
        access.status = response.status_code
        access.emit()
    return response


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if (
        not root.handlers
    ):  # leave logging alone when the host (pytest, hypercorn -log-config) set it up
        logging.basicConfig(
            level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    logging.getLogger("quartchat").setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its per-request lines duplicate ours
    logging.getLogger("alembic").setLevel(logging.WARNING)  # quartchat.db says what migrated
