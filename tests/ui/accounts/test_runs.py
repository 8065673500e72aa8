"""A reply is a run on the server, as the page shows it: a connection cut mid-reply (for real, by
a proxy between the browser and the service) is resumed by itself, quietly, with nothing lost or
shown twice; another browser of the same person with the conversation open sees the reply live;
and Stop there stops it everywhere, closing the upstream's connection.

The test's own browser reaches the service through `CuttableProxy`; the other browsers straight."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ...fake_upstream import FakeUpstream
from ...service import Service
from ..browser import ChatPage, needs_chromium
from ..conftest import WATCH_CSP
from ..proxy import CuttableProxy
from .people import AdminAPI, Person, log_in, open_page
from .test_server_store import (
    SYNC_WITHIN_MS,
    Paced,
    conversation_id,
    leaf_on_server,
    until,
)

pytestmark = needs_chromium

# After a drop the page tries again after 0.5 s, doubling: a few tries fit in this.
RECONNECTED_WITHIN_MS = 15_000


@pytest.fixture
def proxy(service: Service) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(service.port)
    yield proxy
    proxy.close()


@pytest.fixture
def context(browser: Browser, proxy: CuttableProxy) -> Iterator[BrowserContext]:
    """The test's browser, on the service through the proxy."""
    context = browser.new_context(base_url=proxy.url, viewport={"width": 1280, "height": 800})
    context.add_init_script(WATCH_CSP)
    yield context
    context.close()


@pytest.fixture
def person(page: Page, admin_api: AdminAPI) -> Person:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    return person


def test_a_connection_cut_mid_reply_is_resumed_by_itself_and_loses_nothing(
    page: Page, person: Person, fake: FakeUpstream, proxy: CuttableProxy, service: Service
) -> None:
    reply = Paced(fake)
    asked = len(fake.chat_requests())
    chat = ChatPage(open_page(page, "/"))
    chat.send("tell me slowly")
    content = chat.content(chat.last_reply())
    expect(content).to_have_text(reply.say(2))
    cid = conversation_id(page)
    assert proxy.cut() >= 1  # the reply's stream among them
    expect(chat.last_reply()).to_contain_text("Reconnecting…")
    expect(chat.last_reply()).not_to_contain_text("Generating…")
    expect(chat.last_reply().locator(".error-box")).to_have_count(0)  # quiet: no error
    missed = reply.say(3)  # said while the page cannot hear
    # (The server has them: read straight from it, past the proxy.)
    until(lambda: leaf_on_server(page.context, cid, service.url)["content"] == missed, page)
    expect(content).to_have_text("Alpha bravo")
    proxy.up()
    expect(content).to_have_text(missed, timeout=RECONNECTED_WITHIN_MS)  # each piece, once
    expect(chat.last_reply()).to_contain_text("Generating…")
    expect(content).to_have_text(reply.say(1))  # live again
    expect(content).to_have_text(reply.finish())
    chat.wait_until_idle()
    assert content.inner_text() == reply.full
    expect(chat.replies).to_have_count(1)
    saved = leaf_on_server(page.context, cid)
    assert (saved["content"], saved["status"]) == (reply.full, "complete")
    assert len(fake.chat_requests()) == asked + 1  # resumed, never asked again


def same_person_elsewhere(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> tuple[ChatPage, ChatPage]:
    """The test's browser with a conversation of one finished turn, and another browser of the
    same person with that conversation open."""
    chat = ChatPage(open_page(page, "/"))
    chat.send("first")
    chat.wait_until_idle()
    phone = other_browser()
    log_in(phone.context, person.email)
    there = ChatPage(open_page(phone, f"/#{conversation_id(page)}"))
    expect(there.content(there.last_reply())).to_have_text("Echo: first")
    return chat, there


def test_another_browser_with_the_conversation_open_sees_the_reply_live(
    page: Page, person: Person, fake: FakeUpstream, other_browser: Callable[[], Page]
) -> None:
    chat, there = same_person_elsewhere(page, person, other_browser)
    reply = Paced(fake)
    chat.send("second")
    here = chat.content(chat.last_reply())
    expect(here).to_have_text(reply.say(2))
    live = there.content(there.last_reply())
    expect(live).to_have_text(reply.shown, timeout=SYNC_WITHIN_MS)  # heard from the change feed
    expect(there.last_reply()).to_contain_text("Generating…")
    expect(there.stop_button).to_be_visible()
    for _ in range(3):  # word by word, as it is said
        expect(live).to_have_text(reply.say(1))
    expect(here).to_have_text(reply.shown)
    reply.finish()
    for side in (chat, there):
        expect(side.content(side.last_reply())).to_have_text(reply.full)
        side.wait_until_idle()
        expect(side.content(side.messages)).to_have_text(
            ["first", "Echo: first", "second", reply.full]
        )
    assert live.inner_text() == reply.full


def test_stop_in_another_browser_stops_the_reply_in_both_and_closes_the_upstream(
    page: Page, person: Person, fake: FakeUpstream, other_browser: Callable[[], Page]
) -> None:
    chat, there = same_person_elsewhere(page, person, other_browser)
    reply = Paced(fake)
    hangups = len(fake.disconnects)
    chat.send("never mind")
    expect(chat.content(chat.last_reply())).to_have_text(reply.say(3))
    expect(there.content(there.last_reply())).to_have_text(reply.shown, timeout=SYNC_WITHIN_MS)
    expect(there.stop_button).to_be_visible()
    there.stop_button.click()
    assert fake.wait_for_disconnects(hangups + 1, timeout=5)  # the upstream was hung up on
    for side in (chat, there):
        # Heard as a stop, not as an error (said before the page reads the conversation again).
        expect(side.page.locator("#announcer")).to_have_text("Reply stopped.")
        expect(side.last_reply()).to_contain_text("Stopped")
        expect(side.content(side.last_reply())).to_have_text(reply.shown)
        side.wait_until_idle()
        expect(side.last_reply().locator(".error-box")).to_have_count(0)  # not an error
    saved = leaf_on_server(there.page.context, conversation_id(page))
    assert (saved["content"], saved["status"]) == (reply.shown, "stopped")


KEPT = "Object.keys(sessionStorage).filter((key) => key.startsWith('quartchat.run.'))"
# A phone putting the page in the background, and bringing it back.
HIDE = """() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
                 document.dispatchEvent(new Event('visibilitychange')); }"""
SHOW = """() => { delete document.visibilityState;
                 document.dispatchEvent(new Event('visibilitychange')); }"""


def test_what_a_tab_keeps_of_a_reply_for_the_next_page_goes_once_the_reply_ends(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    reply = Paced(fake)
    chat = ChatPage(open_page(page, "/"))
    chat.send("a long one")
    expect(chat.content(chat.last_reply())).to_have_text(reply.say(2))
    page.evaluate(HIDE)
    assert len(page.evaluate(KEPT)) == 1  # kept in case the page does not come back
    page.evaluate(SHOW)
    expect(chat.content(chat.last_reply())).to_have_text(reply.finish())
    chat.wait_until_idle()
    assert page.evaluate(KEPT) == []  # a tab open for days would otherwise fill its storage
