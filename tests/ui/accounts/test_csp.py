"""The account pages are served under the chat page's strict Content-Security-Policy, with
nothing in them it would block (the browser tests fail on any CSP report besides)."""

from __future__ import annotations

import httpx
import pytest

from ...service import Service
from .people import AdminAPI


@pytest.mark.parametrize("path", ["/login", "/setup", "/invite", "/account", "/admin"])
def test_each_account_page_has_the_strict_csp_and_nothing_it_would_block(
    service: Service, admin_api: AdminAPI, path: str
) -> None:
    public = path in ("/login", "/setup", "/invite")
    response = httpx.get(service.url + path) if public else admin_api.http.get(path)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in response.text and " style=" not in response.text
