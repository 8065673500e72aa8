"""One conversation open in two tabs of one browser (two pages sharing localStorage): each sees
the other's changes, neither overwrites the other, and a reply streaming in one tab is shown in
the other as being written there, not as cut off, unless its tab is gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, ask, needs_chromium
from .conftest import csp_problems, watch

pytestmark = needs_chromium

# store.js: how often a tab writing a reply says so where Web Locks are missing, and how long
# other tabs wait without hearing of it before they show the reply as cut off.
HEARTBEAT_MS = 2000
HEARTBEAT_STALE_MS = 3 * HEARTBEAT_MS


@pytest.fixture
def other_tab(context: BrowserContext, blocked_payloads: list[str]) -> Iterator[Page]:
    """A second tab in the same browser, watched for errors like `page`."""
    problems: list[str] = []
    tab = watch(context.new_page(), problems)
    yield tab
    problems += csp_problems(tab, blocked_payloads)
    assert problems == []


# Lets a test make a tab deaf to other tabs' writes (a tab that lags behind): the page's own
# `storage` listeners are wrapped before its scripts run. (A capturing listener that stops the
# event would not do: at the window, Chromium calls listeners in the order they were added.)
DEAFNESS = """
window.__deaf = false;
const addListener = EventTarget.prototype.addEventListener;
EventTarget.prototype.addEventListener = function (type, listener, options) {
  if (this === window && type === 'storage') {
    return addListener.call(this, type, (e) => window.__deaf || listener.call(this, e), options);
  }
  return addListener.call(this, type, listener, options);
};
"""


def same_conversation(chat: ChatPage, tab: Page) -> ChatPage:
    """Open the conversation that `chat` shows in `tab`."""
    return ChatPage(tab).open("/" + chat.page.evaluate("location.hash"))


def hanging(*words: str) -> Reply:
    return Reply(chunks=completion_chunks(list(words))[: 1 + len(words)], hang=True)


def local_storage(page: Page) -> dict[str, str]:
    result: dict[str, str] = page.evaluate("({...localStorage})")
    return result


def texts(chat: ChatPage) -> list[str]:
    return [t.strip() for t in chat.messages.locator(".content").all_inner_texts()]


def test_each_tab_sees_the_other_s_exchange_and_neither_overwrites_it(
    chat: ChatPage, other_tab: Page
) -> None:
    ask(chat, "from A")
    b = same_conversation(chat, other_tab)
    ask(b, "from B")
    # A was not reloaded: it took B's exchange in when B saved it.
    expect(chat.messages.locator(".content")).to_have_text(
        ["from A", "Echo: from A", "from B", "Echo: from B"]
    )
    ask(chat, "from A again")
    expect(b.messages.locator(".content")).to_have_text(
        ["from A", "Echo: from A", "from B", "Echo: from B", "from A again", "Echo: from A again"]
    )
    (stored,) = chat.stored()
    assert len(stored["messages"]) == 6


def test_a_tab_that_missed_a_change_is_refused_reloads_and_keeps_its_question(
    chat: ChatPage, other_tab: Page, fake: FakeUpstream
) -> None:
    ask(chat, "first")
    other_tab.add_init_script(DEAFNESS)
    b = same_conversation(chat, other_tab)
    # B stops hearing about A's writes, so its next write is made against an older revision of
    # the conversation.
    b.page.evaluate("window.__deaf = true")
    ask(chat, "from A")
    expect(b.messages).to_have_count(2)  # B has not seen it
    ask(b, "from B")
    # The store refused B's write; B reloaded, put its question after A's exchange, and asked
    # with that context.
    expect(b.messages.locator(".content")).to_have_text(
        ["first", "Echo: first", "from A", "Echo: from A", "from B", "Echo: from B"]
    )
    assert fake.chat_requests()[-1].json["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "from A"},
        {"role": "assistant", "content": "Echo: from A"},
        {"role": "user", "content": "from B"},
    ]
    (stored,) = chat.stored()
    assert len(stored["messages"]) == 6


def test_the_store_refuses_a_write_made_against_an_older_revision(chat: ChatPage) -> None:
    outcome = chat.page.evaluate(
        """async () => {
          const { openStore } = await import('/static/store.js');
          const store = await openStore(() => ({}));
          const c = {id: 'rev1', title: 'first', createdAt: 1, updatedAt: 1, settings: {},
                     leafId: null, messages: []};
          const { revision } = await store.create(c);
          const newer = await store.update('rev1', {title: 'newer'}, {revision});
          let refused = null;
          try { await store.update('rev1', {title: 'older'}, {revision}); }
          catch (error) { refused = [error.name, error.revision]; }
          return {first: revision, newer: newer.revision, refused,
                  title: (await store.get('rev1')).title};
        }"""
    )
    assert outcome == {
        "first": 1,
        "newer": 2,
        "refused": ["ConflictError", 2],
        "title": "newer",
    }


def test_a_reply_streaming_in_one_tab_is_being_written_elsewhere_in_the_other(
    chat: ChatPage, other_tab: Page, fake: FakeUpstream
) -> None:
    ask(chat, "first")
    b = same_conversation(chat, other_tab)
    fake.reply_with(hanging("Partial", " answer"))
    chat.send("a long one")
    expect(b.content(b.last_reply())).to_have_text("Partial answer")  # saved as it streams
    expect(b.last_reply()).to_contain_text("Being written in another tab")
    expect(b.page.locator(".error-box")).to_have_count(0)  # not "cut off"
    # B cannot ask on top of a reply it does not have whole; what it typed stays.
    b.input.fill("from B")
    b.input.press("Enter")
    expect(b.page.get_by_role("status").filter(has_text="another tab")).to_be_visible()
    expect(b.input).to_have_value("from B")
    chat.stop_button.click()
    expect(b.last_reply().locator(".status")).to_have_text("Stopped")
    b.send_button.click()
    expect(b.content(b.last_reply())).to_have_text("Echo: from B")


def test_a_reply_whose_tab_was_closed_is_shown_as_cut_off(
    chat: ChatPage, other_tab: Page, fake: FakeUpstream
) -> None:
    ask(chat, "first")
    b = same_conversation(chat, other_tab)
    fake.reply_with(hanging("Half", " of it"))
    chat.send("a long one")
    expect(b.last_reply()).to_contain_text("Being written in another tab")
    expect(b.content(b.last_reply())).to_have_text("Half of it")
    chat.page.close()
    error = b.last_reply().locator(".error-box")
    expect(error).to_contain_text("cut off when the page was closed")
    expect(b.content(b.last_reply())).to_have_text("Half of it")
    error.get_by_role("button", name="Retry").click()  # asks again: a new version
    expect(b.content(b.last_reply())).to_have_text("Echo: a long one")


def test_a_conversation_deleted_in_one_tab_closes_in_the_other(
    chat: ChatPage, other_tab: Page
) -> None:
    ask(chat, "doomed")
    b = same_conversation(chat, other_tab)
    chat.sidebar.get_by_role("button", name="Delete “doomed”").click()
    expect(b.page.get_by_text("“doomed” was deleted in another tab.")).to_be_visible()
    expect(b.messages).to_have_count(0)
    expect(b.sidebar.get_by_role("link")).to_have_count(0)


def test_without_web_locks_a_heartbeat_tells_a_live_reply_from_a_cut_off_one(
    chat: ChatPage, other_tab: Page, fake: FakeUpstream
) -> None:
    tabs = chat.page.context
    # As on plain http at a LAN address, which is not a secure context: no navigator.locks.
    tabs.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})"
    )
    # Both tabs' time is Playwright's (it flows on its own until the test moves it on).
    tabs.clock.install()
    chat.reload()
    ask(chat, "first")
    b = same_conversation(chat, other_tab)
    assert b.page.evaluate("navigator.locks") is None
    fake.reply_with(hanging("Half", " of it"))
    chat.send("a long one")
    expect(b.last_reply()).to_contain_text("Being written in another tab")
    expect(b.content(b.last_reply())).to_have_text("Half of it")
    # Twice as long as a reply goes unheard before it counts as cut off, one heartbeat at a time.
    # run_for returns once every timer due by then has run in both tabs (and what each started
    # has settled): B's checks, and what a failed check would have shown. Each tab's copy of the
    # storage is kept in step a moment later, so B is given A's latest beat before time moves on
    # again: the newest beat B sees is never more than one heartbeat old.
    (writer_key,) = [k for k in local_storage(chat.page) if ".writing." in k]
    for _ in range(2 * HEARTBEAT_STALE_MS // HEARTBEAT_MS):
        tabs.clock.run_for(HEARTBEAT_MS)
        beat = local_storage(chat.page)[writer_key]
        b.page.wait_for_function(
            "([k, v]) => localStorage.getItem(k) === v", arg=[writer_key, beat]
        )
    expect(b.last_reply()).to_contain_text("Being written in another tab")
    expect(b.page.locator(".error-box")).to_have_count(0)
    chat.page.close()
    tabs.clock.run_for(2 * HEARTBEAT_STALE_MS)  # the same time without A: no more beats
    error = b.last_reply().locator(".error-box")
    expect(error).to_contain_text("cut off when the page was closed")


def test_a_message_lost_to_two_tabs_writing_at_once_is_saved_again(
    chat: ChatPage, other_tab: Page
) -> None:
    ask(chat, "first")
    ask(chat, "second")
    ChatPage(other_tab).open()  # another tab, on a new chat
    # Its write of the conversation, at the same revision, lacks A's last exchange: what is left
    # when two tabs pass the revision check at the same moment and the other one writes last.
    other_tab.evaluate(
        """() => { const key = Object.keys(localStorage).find((k) => k.startsWith('quartchat.v1.c.'));
                   const c = JSON.parse(localStorage.getItem(key));
                   c.messages = c.messages.slice(0, 2);
                   c.leafId = c.messages[1].id;
                   localStorage.setItem(key, JSON.stringify(c)); }"""
    )
    # A takes that in, finds its messages missing, and saves them again.
    chat.page.wait_for_function(
        """() => { const key = Object.keys(localStorage).find((k) => k.startsWith('quartchat.v1.c.'));
                   return JSON.parse(localStorage.getItem(key)).messages.length === 4; }"""
    )
    (stored,) = chat.stored()
    assert [m["content"] for m in stored["messages"]] == [
        "first",
        "Echo: first",
        "second",
        "Echo: second",
    ]
    expect(chat.messages).to_have_count(4)
