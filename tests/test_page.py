"""The chat page in a real browser (Debian's Chromium via Playwright) against the real service."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .fake_upstream import FakeUpstream, Reply, completion_chunks
from .service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="needs Debian's chromium (scripts/test installs it when run as root)",
    ),
]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.default_delay = 0.05
        yield fake


@pytest.fixture(scope="module")
def service(fake: FakeUpstream) -> Iterator[Service]:
    with Service(fake.url) as service:
        yield service


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, service: Service) -> Iterator[Page]:
    context = browser.new_context(base_url=service.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("/")
    yield page
    context.close()
    assert errors == []


def send(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def test_reply_streams_in_step_by_step(page: Page) -> None:
    page.evaluate(
        """() => { window.seen = new Set();
        new MutationObserver(() => { const m = document.querySelector('.message.assistant');
          if (m) window.seen.add(m.textContent); })
        .observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true}); }"""
    )
    send(page, "one two three four five")
    expect(page.locator(".message.assistant")).to_have_text("Echo: one two three four five")
    assert page.evaluate("window.seen.size") >= 4  # partial texts were shown on the way


def test_history_survives_a_reload_and_new_chat_clears_it(page: Page) -> None:
    send(page, "remember me")
    expect(page.locator(".message.assistant")).to_have_text("Echo: remember me")
    page.reload()
    expect(page.locator(".message")).to_have_text(["remember me", "Echo: remember me"])
    page.get_by_role("button", name="New Chat").click()
    expect(page.locator(".message")).to_have_count(0)
    page.reload()
    expect(page.locator(".message")).to_have_count(0)


def test_model_output_is_text_never_html(page: Page, fake: FakeUpstream) -> None:
    payload = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    fake.reply_with(Reply(chunks=completion_chunks([payload])))
    send(page, "attack")
    expect(page.locator(".message.assistant")).to_have_text(payload)
    assert page.locator("#messages img, #messages b").count() == 0
    assert page.evaluate("window.pwned") is None


def test_an_upstream_error_is_shown_in_the_page(page: Page, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(status=429, chunks=[b'{"error": {"message": "quota"}}'], headers={}))
    send(page, "too much")
    expect(page.locator(".message.error")).to_contain_text("rate limiting")
