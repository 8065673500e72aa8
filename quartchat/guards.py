"""Checks every request passes before any view runs: the Host it names, and where it came from.

* **Host.** A request must name a host the service is meant to be reached by: a loopback name,
  or one in `ALLOWED_HOSTS` (none set: any). This is what stops DNS rebinding, where a web page
  makes a browser talk to the service under the page's own host name.
* **Cross-site requests never change state.** A browser lets any page send a POST anywhere; the
  login cookies of the next layers must not make such a request act for the user. The rule is
  Go 1.25's `http.CrossOriginProtection`: a state-changing request whose `Sec-Fetch-Site` is not
  `same-origin` or `none` is refused; without `Sec-Fetch-Site` (older browsers), one whose
  `Origin` names another host than `Host` is refused; with neither header it is not a browser's
  cross-site request (curl, scripts, SDKs) and passes.
* **JSON only.** State-changing requests must say `Content-Type: application/json`, which no
  cross-site form or `text/plain` fetch can send without a CORS preflight (and the service
  answers no preflight: it sends no CORS headers at all).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import request
from werkzeug.datastructures import Headers

from .errors import APIError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_ORIGIN = frozenset({"same-origin", "none"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def host_name(host: str) -> str:
    """The name in a Host header, lower-cased and without its port."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8333
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """Whether a Host header names this service: a loopback name or one of `allowed`.

    An entry `.example.com` or `*.example.com` allows example.com and every subdomain; `*` allows
    any host, and so does no entry at all unless `loopback_default` (AUTH_MODE=none: a service
    without accounts answers only loopback names unless told otherwise).
    """

    def __init__(self, allowed: list[str], *, loopback_default: bool = False) -> None:
        names = {a.strip().lower() for a in allowed if a.strip()}
        self.any = "*" in names or (not names and not loopback_default)
        self.exact = LOOPBACK_HOSTS | {n for n in names if not n.startswith((".", "*."))}
        self.suffixes = tuple("." + n.lstrip("*.") for n in names if n.startswith((".", "*.")))

    def __call__(self, host: str) -> bool:
        if self.any:
            return True
        name = host_name(host)
        return name in self.exact or name.endswith(self.suffixes) or ("." + name) in self.suffixes


def check_host(allowed: HostCheck, headers: Headers) -> None:
    """400 `HOST_NOT_ALLOWED` unless the request's Host (in `headers`) is `allowed`."""
    if not allowed(headers.get("Host", "")):
        raise APIError(
            400,
            "HOST_NOT_ALLOWED",
            "This service is not served under that host name; add it to ALLOWED_HOSTS.",
        )


def check_cross_site(method: str, headers: Headers) -> None:
    """403 `CROSS_SITE_REQUEST` for a state-changing request (`method`, `headers`) from
    another site."""
    if method in SAFE_METHODS:
        return
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site in SAME_ORIGIN:
            return
        raise cross_site()
    origin = headers.get("Origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    if origin == "null" or not parts.netloc or parts.netloc.lower() != request.host.lower():
        raise cross_site()


def require_json(method: str, headers: Headers) -> None:
    """415 `UNSUPPORTED_MEDIA_TYPE` for a state-changing request whose body is not JSON."""
    if method in SAFE_METHODS or method == "DELETE":
        return
    # What werkzeug's `Request.mimetype` says, without parsing the header's parameters.
    mimetype = headers.get("Content-Type", "").partition(";")[0].strip(" \t").lower()
    if mimetype != "application/json":
        raise APIError(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the request body as JSON, with Content-Type: application/json.",
        )


def cross_site() -> APIError:
    return APIError(
        403,
        "CROSS_SITE_REQUEST",
        "Requests from other sites may not change anything here.",
    )
