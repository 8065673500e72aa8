"""The first start: no account yet. The login page points to the setup link the service printed;
that link makes the first admin and opens the chat.

This module has a service of its own, with no user, which the last test here changes (it makes
the admin): the tests before it rely on running first, as pytest runs a module's tests in order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Literal

import pytest
from playwright.sync_api import Page, expect

from ...fake_upstream import FakeUpstream
from ...service import Service
from ..browser import axe_violations, needs_chromium, screenshot
from .conftest import ACCOUNTS_ENV
from .people import PASSWORD, open_page, path_of

pytestmark = needs_chromium

PRINTED_LINK = re.compile(r"http://\S+(/setup\?token=[\w-]+)")


@pytest.fixture(scope="module")
def service(fake: FakeUpstream) -> Iterator[Service]:
    with Service(fake.url, **ACCOUNTS_ENV) as service:
        yield service


def printed_setup_link(service: Service) -> str:
    """The link the service printed at start, as a path on it."""
    deadline = time.monotonic() + 5
    while not (found := PRINTED_LINK.search(service.log())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found, f"no setup link in the service's output:\n{service.log()}"
    return found[1]


def fill_setup(page: Page, email: str, password: str, again: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(again)
    page.get_by_role("button", name="Create the admin account").click()


def test_the_login_page_points_to_the_setup_link_while_there_is_no_account(page: Page) -> None:
    open_page(page, "/login")
    expect(page.get_by_role("region", name="Create the admin account")).to_contain_text(
        "open the link the service printed when it started"
    )
    expect(page.get_by_role("button", name="Log in")).to_be_hidden()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_setup_page_has_no_serious_accessibility_violations(
    page: Page, service: Service, scheme: Literal["light", "dark"]
) -> None:
    page.emulate_media(color_scheme=scheme)
    open_page(page, printed_setup_link(service))
    expect(page.get_by_label("Email")).to_be_visible()
    screenshot(page, f"setup-{scheme}")
    assert axe_violations(page) == []


def test_a_setup_link_with_a_wrong_token_shows_the_refusal(page: Page) -> None:
    open_page(page, "/setup?token=not-the-token")
    fill_setup(page, "boss@example.com", PASSWORD, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text(
        "This setup link is not valid, or the admin account exists already."
    )


def test_the_printed_setup_link_makes_the_first_admin_and_opens_the_chat(
    page: Page, service: Service
) -> None:
    open_page(page, printed_setup_link(service))
    fill_setup(page, "boss@example.com", PASSWORD, PASSWORD)
    expect(page.locator("body[data-ready][data-default-model]")).to_be_attached()
    assert path_of(page) == "/"
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    assert page.request.get("/api/auth/me").json()["role"] == "admin"
