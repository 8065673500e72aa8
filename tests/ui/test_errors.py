"""Errors as the reader sees them: a rate limit's wait, an HTML error page reduced to words, a
reply cut off by a reload."""

from __future__ import annotations

import re
import threading

from playwright.sync_api import Route, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, needs_chromium

pytestmark = needs_chromium

HTML_PAGE = b"""<!DOCTYPE html>
<html><head><title>502 Bad Gateway</title><style>body { color: red }</style></head>
<body><h1>Bad Gateway</h1><p>The proxy got an invalid response.</p>
<script>alert(1)</script><hr><address>nginx/1.27.0</address></body></html>"""


def test_a_rate_limited_reply_says_how_long_to_wait_and_retry_waits_that_long(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(
        Reply(
            status=429,
            chunks=[b'{"error": {"message": "slow down"}}'],
            headers={"Content-Type": "application/json", "Retry-After": "3"},
        )
    )
    chat.send("too fast")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("slow down. Wait 3 seconds before retrying.")
    retry = error.get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    expect(retry).to_have_text("Retry in 3 s")
    expect(retry).to_have_text("Retry in 2 s", timeout=2_500)  # it counts down
    chat.reload()  # the wait is kept with the reply
    retry = chat.last_reply().get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    expect(retry).to_be_enabled(timeout=5_000)
    expect(retry).to_have_text("Retry")
    retry.click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: too fast")


def test_an_upstream_error_is_shown_once_in_the_reply_and_retry_sends_once(
    chat: ChatPage, fake: FakeUpstream
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
    chat.send("the failing question")
    chat.input.fill("my own next thought")  # typed while the question is on its way
    held.release()
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("the model is overloaded")
    # Once on the page (the announcer's words are for screen readers): no banner besides.
    shown = chat.page.locator("#banners, #messages").get_by_text("the model is overloaded")
    expect(shown).to_have_count(1)
    expect(chat.user_messages).to_have_count(1)
    expect(chat.input).to_have_value("my own next thought")
    asked = len(fake.chat_requests())
    error.get_by_role("button", name="Retry").click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: the failing question")
    chat.wait_until_idle()
    assert len(fake.chat_requests()) == asked + 1
    expect(chat.user_messages).to_have_count(1)
    expect(chat.input).to_have_value("my own next thought")


def test_a_rate_limit_s_wait_is_counted_on_the_page_s_clock_and_kept_across_a_reload(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    chat.page.clock.install()
    fake.reply_with(
        Reply(
            status=429,
            chunks=[b'{"error": {"message": "slow down"}}'],
            headers={"Content-Type": "application/json", "Retry-After": "30"},
        )
    )
    chat.send("too fast")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("slow down. Wait 30 seconds before retrying.")
    retry = error.get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    chat.page.clock.pause_at(chat.page.evaluate("Date.now()") / 1000 + 0.5)
    chat.page.clock.run_for(10_000)
    expect(retry).to_have_text("Retry in 20 s")
    chat.reload()
    retry = chat.last_reply().get_by_role("button", name="Retry")
    expect(retry).to_be_disabled()
    expect(retry).to_have_text(re.compile(r"Retry in (1\d|20) s"))  # what was left of it
    chat.page.clock.run_for(20_000)
    expect(retry).to_be_enabled()
    expect(retry).to_have_text("Retry")
    chat.page.clock.resume()
    retry.click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: too fast")


def test_an_upstream_html_error_page_is_shown_as_its_title(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(
        Reply(status=400, chunks=[HTML_PAGE], headers={"Content-Type": "text/html"}),
        Reply(status=503, chunks=[HTML_PAGE], headers={"Content-Type": "text/html"}),
    )
    for question in ("rejected", "failed"):
        chat.send(question)
        error = chat.last_reply().locator(".error-box")
        expect(error).to_contain_text("502 Bad Gateway")
        text = error.inner_text()
        for raw in ("<", "DOCTYPE", "alert", "color: red", "nginx", "invalid response"):
            assert raw not in text
        chat.page.get_by_role("button", name="New Chat").click()


def test_a_proxy_s_html_error_page_in_front_of_the_server_is_not_shown(chat: ChatPage) -> None:
    def proxy_error(route: Route) -> None:
        route.fulfill(status=502, body=HTML_PAGE, content_type="text/html")

    chat.page.route("**/api/chat/stream", proxy_error)
    chat.send("behind a proxy")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("The server answered 502")
    assert "<" not in error.inner_text()
    assert "Bad Gateway</title>" not in chat.page.content()


def test_a_reply_streaming_when_the_page_is_reloaded_is_marked_as_cut_off(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["Half", " of it"])[:3], hang=True))
    chat.send("a long one")
    expect(chat.content(chat.last_reply())).to_have_text("Half of it")
    chat.page.wait_for_timeout(300)
    chat.reload()
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("This reply was cut off when the page was closed.")
    expect(error).not_to_contain_text("connection dropped")
    expect(chat.content(chat.last_reply())).to_have_text("Half of it")
    error.get_by_role("button", name="Retry").click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: a long one")
