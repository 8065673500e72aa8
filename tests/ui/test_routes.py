"""The page routes without a browser: where the login page may send one afterwards, and that the
account pages do not exist without accounts (this package's service runs with AUTH_MODE=none)."""

from __future__ import annotations

import httpx
import pytest

from quartchat.blueprints.ui import safe_next

from ..service import Service


@pytest.mark.parametrize(
    "target",
    ["/", "/account", "/admin?tab=users", "/#conversation-id", "/a/b?c=d&e=f#g", "/%2F%2Fx"],
)
def test_next_keeps_a_path_on_this_site(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "account",  # relative: resolved against /login it is still here, but nothing asks for it
        "https://evil.example/",
        "HTTPS://evil.example/",
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "javascript:alert(1)",
        " /account",
    ],
)
def test_next_is_the_chat_for_anything_but_a_path_on_this_site(target: str | None) -> None:
    assert safe_next(target) == "/"


@pytest.mark.parametrize("path", ["/login", "/setup", "/invite", "/account", "/admin"])
def test_without_accounts_the_account_pages_do_not_exist(service: Service, path: str) -> None:
    assert httpx.get(service.url + path).status_code == 404


def test_without_accounts_the_chat_page_has_no_account_links(service: Service) -> None:
    page = httpx.get(service.url + "/").text
    assert 'href="/account"' not in page
    assert "data-logout" not in page
    assert "logout.js" not in page
