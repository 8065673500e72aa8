"""Shared browser-test fixtures: one fake upstream, one service and one Chromium for the package
(torn down when it ends: sync Playwright's event loop must not outlive it, or the asyncio tests
collected after it cannot start theirs);
a fresh browser context (empty storage) per test, and a page that fails the test on any page error,
console error or Content-Security-Policy report it did not provoke on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from ..fake_upstream import FakeUpstream
from ..service import Service
from .browser import CHROMIUM, CHROMIUM_ARGS, ChatPage

# Records CSP violations in the page as the standard `securitypolicyviolation` events describe
# them; an init script is injected by the browser, not the page, so the policy does not apply to
# it. The page's CSP asks for 'report-sample', so a report of blocked inline code carries its
# first 40 characters, which is what ties a report to the markup that caused it.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => window.__cspViolations.push({
  directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample }));
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
def blocked_payloads() -> list[str]:
    """Markup a test puts into the page on purpose: the CSP reports of its blocked inline code
    (a report whose sample is part of one of these strings) are what the test wants, not problems.
    """
    return []


def unexpected_violations(violations: list[dict[str, str]], payloads: list[str]) -> list[str]:
    """CSP reports no declared payload explains: anything but inline code, or code not in them."""
    return [
        f"CSP violation: {v['directive']} {v['blocked']} {v['sample']!r}"
        for v in violations
        if not (
            v["blocked"] == "inline" and v["sample"] and any(v["sample"] in p for p in payloads)
        )
    ]


def watch(page: Page, problems: list[str]) -> Page:
    """Record the page's errors, its console errors and Chromium's own error entries in `problems`.

    Chromium's own log entries are told apart by their source, not their wording (which changes
    between versions): "security" entries are the console form of CSP reports (judged from the
    reports themselves, see `csp_problems`), and "network" entries are failed loads (error
    statuses a test asks for; a load from a foreign origin is a CSP report too).
    """
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    cdp = page.context.new_cdp_session(page)

    def console_api(event: dict[str, Any]) -> None:
        if event["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in event["args"])
            problems.append(f"console.{event['type']}: {args}")

    def log_entry(event: dict[str, Any]) -> None:
        entry = event["entry"]
        if entry["level"] == "error" and entry["source"] not in ("security", "network"):
            problems.append(f"browser {entry['source']} error: {entry['text']}")

    cdp.on("Runtime.consoleAPICalled", console_api)
    cdp.on("Log.entryAdded", log_entry)
    cdp.send("Runtime.enable")
    cdp.send("Log.enable")
    return page


def csp_problems(page: Page, payloads: list[str]) -> list[str]:
    """The CSP reports of a page still open that no declared payload explains."""
    if page.is_closed():
        return []
    return unexpected_violations(page.evaluate("window.__cspViolations || []"), payloads)


@pytest.fixture
def page(context: BrowserContext, blocked_payloads: list[str]) -> Iterator[Page]:
    """A page that fails its test on a page error, a console error, or a CSP report no declared
    payload explains (see `watch`)."""
    problems: list[str] = []
    page = watch(context.new_page(), problems)
    yield page
    problems += csp_problems(page, blocked_payloads)
    assert problems == []


@pytest.fixture
def chat(page: Page) -> ChatPage:
    return ChatPage(page).open()
