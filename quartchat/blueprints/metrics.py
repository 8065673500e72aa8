"""`GET /metrics`: the app's metrics (usage/metrics.py) in Prometheus' text format.

Open to a client on this host (a loopback address, the way the rest of the app tells a client's
address: X-Forwarded-For believed only from TRUSTED_PROXIES); anyone else must send
`Authorization: Bearer <METRICS_TOKEN>`, or gets 401 `UNAUTHENTICATED`. The accounts gate lets
this route through to its own check (app.py): the metrics token is not an account's credential.
"""

from __future__ import annotations

import hmac
import ipaddress

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, current_app, request
from quart_schema import hide

from ..auth.gate import public
from ..auth.principal import Networks, unauthenticated
from ..config import Settings
from ..usage.metrics import Metrics

blueprint = Blueprint("metrics", __name__)

ENDPOINT = "metrics.scrape"
# Headers a proxy adds: from a peer that is not a trusted proxy they say the request came from
# elsewhere, through a proxy on this host (nginx or Caddy in front, TRUSTED_PROXIES not set).
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


@blueprint.get("/metrics")
@public
@hide  # Prometheus' format, for Prometheus (docs/gateway.md), not the API's description
async def scrape() -> Response:
    """Prometheus metrics.

    Open on loopback; from elsewhere only with `Authorization: Bearer` METRICS_TOKEN.
    """
    settings: Settings = current_app.config["QUARTCHAT"]
    if not _from_this_host(settings) and not _bearer_matches(settings):
        raise unauthenticated(
            "GET /metrics answers clients on this host; others send METRICS_TOKEN as a bearer."
        )
    metrics: Metrics = current_app.extensions["metrics"]
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


def _from_this_host(settings: Settings) -> bool:
    networks: Networks = current_app.extensions.get("networks") or Networks(
        settings.trusted_proxies
    )
    if not networks.is_trusted(request.remote_addr or "") and any(
        name in request.headers for name in FORWARDING_HEADERS
    ):
        return False
    return is_loopback(networks.client())


def is_loopback(address: str) -> bool:
    """Whether `address` is a loopback address (an IPv4-mapped IPv6 one included)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _bearer_matches(settings: Settings) -> bool:
    if settings.metrics_token is None:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    expected = settings.metrics_token.get_secret_value().encode()
    return hmac.compare_digest(given.strip().encode(), expected)
