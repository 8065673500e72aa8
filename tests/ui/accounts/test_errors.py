"""Errors of a logged-in user's replies, as in the browser-storage mode (tests/ui/test_errors.py):
an upstream refusal is said once, in the reply, with Retry; a rate limit's wait holds Retry off,
counts down and outlasts a reload."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import Page, expect

from ...fake_upstream import FakeUpstream, Reply
from ..browser import ChatPage, needs_chromium
from .people import AdminAPI, Person, log_in, open_page

pytestmark = needs_chromium


@pytest.fixture
def person(page: Page, admin_api: AdminAPI) -> Person:
    """A user of their own, logged in in the test's browser."""
    person = admin_api.new_user()
    log_in(page.context, person.email)
    return person


def rate_limited(seconds: int) -> Reply:
    return Reply(
        status=429,
        chunks=[b'{"error": {"message": "slow down"}}'],
        headers={"Content-Type": "application/json", "Retry-After": str(seconds)},
    )


def test_an_upstream_error_is_shown_once_in_the_reply_and_retry_sends_once(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    held = threading.Semaphore(0)
    fake.reply_with(
        Reply(
            status=500,
            chunks=[b'{"error": {"message": "the model', b' is overloaded"}}'],
            headers={"Content-Type": "application/json"},
            step=held,  # the error's body ends when the test says so
        )
    )
    chat = ChatPage(open_page(page, "/"))
    chat.send("the failing question")
    chat.input.fill("my own next thought")  # typed while the question is on its way
    held.release()
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("the model is overloaded")
    # Once on the page (the announcer's words are for screen readers): no banner besides.
    expect(
        page.locator("#banners, #messages").get_by_text("the model is overloaded")
    ).to_have_count(1)
    expect(page.locator("#banners .banner")).to_have_count(0)
    expect(chat.user_messages).to_have_count(1)
    expect(chat.content(chat.user_messages.last)).to_have_text("the failing question")
    expect(chat.input).to_have_value("my own next thought")
    asked = len(fake.chat_requests())
    error.get_by_role("button", name="Retry").click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: the failing question")
    chat.wait_until_idle()
    assert len(fake.chat_requests()) == asked + 1
    expect(chat.user_messages).to_have_count(1)
    expect(chat.input).to_have_value("my own next thought")
    chat.reload()  # the server has the question once, and the draft is what was typed
    expect(chat.user_messages).to_have_count(1)
    expect(chat.input).to_have_value("my own next thought")


def test_a_rate_limited_reply_holds_retry_off_and_counts_down_across_a_reload(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    chat = ChatPage(open_page(page, "/"))
    page.clock.install()
    fake.reply_with(rate_limited(30))
    chat.send("too fast")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("slow down. Wait 30 seconds before retrying.")
    expect(page.locator("#banners .banner")).to_have_count(0)
    retry = error.get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 0.5)
    page.clock.run_for(10_000)
    expect(retry).to_have_text("Retry in 20 s")
    chat.reload()  # the wait is kept, in this browser
    retry = chat.last_reply().get_by_role("button", name="Retry")
    expect(chat.last_reply().locator(".error-box")).to_contain_text("Wait 30 seconds")
    expect(retry).to_be_disabled()
    expect(retry).to_have_text(re.compile(r"Retry in (1\d|20) s"))  # what was left of it
    page.clock.run_for(20_000)
    expect(retry).to_be_enabled()
    expect(retry).to_have_text("Retry")
    page.clock.resume()
    retry.click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: too fast")
