"""Shared browser-test fixtures: one fake upstream, one service and one Chromium for the package
(torn down when it ends: sync Playwright's event loop must not outlive it, or the asyncio tests
collected after it cannot start theirs);
a fresh browser context (empty storage) per test that fails the test on any page error, console
error or Content-Security-Policy violation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from ..fake_upstream import FakeUpstream
from ..service import Service
from .browser import CHROMIUM, CHROMIUM_ARGS, ChatPage

# Records CSP violations in the page; an init script is injected by the browser, not the page,
# so the policy does not apply to it.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="package")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="package")
def service(fake: FakeUpstream) -> Iterator[Service]:
    with Service(fake.url) as service:
        yield service


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def fresh_fake(fake: FakeUpstream) -> None:
    """Each test starts with no scripted replies and quick default echoes."""
    fake.replies.clear()
    fake.default_delay = 0.02


@pytest.fixture
def context_options() -> dict[str, object]:
    """Options for the test's browser context; a test overrides this fixture to change them."""
    return {}


@pytest.fixture
def context(
    browser: Browser, service: Service, context_options: dict[str, object]
) -> Iterator[BrowserContext]:
    options: dict[str, object] = {"viewport": {"width": 1280, "height": 800}, **context_options}
    context = browser.new_context(base_url=service.url, **options)  # type: ignore[arg-type]
    context.add_init_script(WATCH_CSP)
    yield context
    context.close()


@pytest.fixture
def expected_problems() -> list[str]:
    """Substrings of console errors or CSP reports a test provokes on purpose."""
    return []


@pytest.fixture
def page(context: BrowserContext, expected_problems: list[str]) -> Iterator[Page]:
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message: ConsoleMessage) -> None:
        # A failed fetch (an error status the test asked for) is logged by Chromium itself.
        if message.type == "error" and "Failed to load resource" not in message.text:
            problems.append(f"console error: {message.text}")

    page.on("console", console)
    yield page
    if not page.is_closed():
        problems += [f"CSP violation: {v}" for v in page.evaluate("window.__cspViolations || []")]
    assert [p for p in problems if not any(e in p for e in expected_problems)] == []


@pytest.fixture
def chat(page: Page) -> ChatPage:
    return ChatPage(page).open()
