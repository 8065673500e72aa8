"""The account pages' browser tests: one service with accounts for the package (its first admin
from ADMIN_EMAIL, sign-up by approval, so that every page and mode exists), the admin's API to
arrange each test, and more browsers for tests about what happens to another one."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page

from ...fake_upstream import FakeUpstream
from ...service import Service
from ..conftest import WATCH_CSP, csp_problems, watch
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, AdminAPI

ACCOUNTS_ENV = {
    "AUTH_MODE": "accounts",
    "SECRET_KEY": "ui-tests-secret-key-not-for-production",
    # Every test logs in from 127.0.0.1; a few log in wrongly on purpose.
    "LOGIN_ATTEMPTS_PER_MINUTE": "1000",
}


@pytest.fixture(scope="package")
def service(fake: FakeUpstream) -> Iterator[Service]:
    env = {
        **ACCOUNTS_ENV,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SIGNUP_POLICY": "approval",
        # The usage views' tests wait for what they made to reach the ledger: soon.
        "USAGE_FLUSH_SECONDS": "0.1",
    }
    with Service(fake.url, **env) as service:
        yield service


@pytest.fixture(scope="package")
def admin_api(service: Service) -> Iterator[AdminAPI]:
    api = AdminAPI(service.url)
    yield api
    api.close()


@pytest.fixture
def other_browser(
    browser: Browser, service: Service, blocked_payloads: list[str]
) -> Iterator[Callable[[], Page]]:
    """Opens another browser (a fresh context: its own cookies) on the service, watched like
    `page`: someone else's, or the same person's phone."""
    problems: list[str] = []
    pages: list[Page] = []

    def open_browser() -> Page:
        context = browser.new_context(base_url=service.url, viewport={"width": 1280, "height": 800})
        context.add_init_script(WATCH_CSP)
        pages.append(watch(context.new_page(), problems))
        return pages[-1]

    yield open_browser
    for page in pages:
        problems += csp_problems(page, blocked_payloads)
        page.context.close()
    assert problems == []
