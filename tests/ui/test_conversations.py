"""Several conversations: the sidebar, persistence across reloads, a full storage, long chats."""

from __future__ import annotations

from playwright.sync_api import expect

from ..fake_upstream import FakeUpstream
from .browser import ChatPage, ask, conversation, needs_chromium

pytestmark = needs_chromium


def test_new_chat_starts_fresh_and_keeps_the_others(chat: ChatPage) -> None:
    ask(chat, "alpha question")
    chat.page.get_by_role("button", name="New Chat").click()
    expect(chat.messages).to_have_count(0)
    expect(chat.page.get_by_role("heading", name="How can I help?")).to_be_visible()
    ask(chat, "beta question")
    expect(chat.sidebar.get_by_role("link")).to_have_text(["beta question", "alpha question"])
    expect(chat.page.get_by_role("heading", level=1)).to_have_text("beta question")


def test_switching_conversations_shows_each_ones_messages(chat: ChatPage) -> None:
    ask(chat, "alpha question")
    chat.page.get_by_role("button", name="New Chat").click()
    ask(chat, "beta question")
    chat.conversation_link("alpha question").click()
    expect(chat.messages.locator(".content")).to_have_text(
        ["alpha question", "Echo: alpha question"]
    )
    expect(chat.conversation_link("alpha question")).to_have_attribute("aria-current", "page")
    chat.conversation_link("beta question").click()
    expect(chat.messages.locator(".content")).to_have_text(["beta question", "Echo: beta question"])
    chat.page.go_back()  # the address names the conversation, so Back works
    expect(chat.messages.locator(".content")).to_have_text(
        ["alpha question", "Echo: alpha question"]
    )


def test_reload_keeps_every_conversation_and_reopens_the_current_one(chat: ChatPage) -> None:
    ask(chat, "alpha question")
    chat.page.get_by_role("button", name="New Chat").click()
    ask(chat, "beta question")
    ask(chat, "beta follow-up")
    chat.reload()
    expect(chat.messages.locator(".content")).to_have_text(
        ["beta question", "Echo: beta question", "beta follow-up", "Echo: beta follow-up"]
    )
    expect(chat.sidebar.get_by_role("link")).to_have_text(["beta question", "alpha question"])


def test_rename_and_delete_from_the_sidebar(chat: ChatPage) -> None:
    ask(chat, "to be renamed")
    chat.sidebar.get_by_role("button", name="Rename “to be renamed”").click()
    title = chat.page.get_by_label("Conversation title")
    title.fill("My project")
    title.press("Enter")
    expect(chat.conversation_link("My project")).to_be_visible()
    expect(chat.page.get_by_role("heading", level=1)).to_have_text("My project")
    chat.reload()
    expect(chat.conversation_link("My project")).to_be_visible()
    chat.sidebar.get_by_role("button", name="Delete “My project”").click()
    expect(chat.sidebar.get_by_role("link")).to_have_count(0)
    expect(chat.messages).to_have_count(0)
    chat.page.get_by_role("button", name="Undo").click()  # a deletion can be taken back
    expect(chat.conversation_link("My project")).to_be_visible()
    expect(chat.messages).to_have_count(2)
    chat.sidebar.get_by_role("button", name="Delete “My project”").click()
    chat.reload()
    expect(chat.sidebar.get_by_role("link")).to_have_count(0)
    assert chat.stored() == []


def test_search_finds_conversations_by_title_or_message_text(chat: ChatPage) -> None:
    chat.seed(conversation("Fruit", [("apples?", "Apples are red.")], cid="fruit", updated=2))
    chat.seed(conversation("Travel", [("trains?", "Trains are fast.")], cid="travel", updated=1))
    chat.reload()
    search = chat.page.get_by_label("Search conversations")
    search.fill("trains are")  # only in a reply, not in any title
    expect(chat.sidebar.get_by_role("link")).to_have_text(["Travel"])
    search.fill("FRUIT")
    expect(chat.sidebar.get_by_role("link")).to_have_text(["Fruit"])
    search.fill("nothing like this")
    expect(chat.page.get_by_text("No conversation matches.")).to_be_visible()
    search.fill("")
    expect(chat.sidebar.get_by_role("link")).to_have_text(["Fruit", "Travel"])


FILL_STORAGE = """() => {
  // Fill localStorage to the brim with filler keys, largest pieces first.
  let size = 1 << 20, i = 0;
  while (size >= 16) {
    try { localStorage.setItem(`filler.${i++}`, 'x'.repeat(size)); }
    catch { size >>= 1; }
  }
}"""


def test_a_full_storage_is_reported_and_what_was_saved_stays_intact(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    ask(chat, "keep me")
    saved = chat.stored()
    chat.page.evaluate(FILL_STORAGE)
    chat.send("this one does not fit " + "words " * 2000)
    expect(chat.page.get_by_role("alert")).to_contain_text("storage for this site is full")
    expect(chat.page.get_by_role("alert")).to_contain_text("everything saved before is safe")
    assert chat.stored() == saved  # the last good version, whole
    chat.reload()
    expect(chat.messages.locator(".content")).to_have_text(["keep me", "Echo: keep me"])
    chat.page.evaluate(
        "Object.keys(localStorage).filter(k => k.startsWith('filler.'))"
        ".forEach(k => localStorage.removeItem(k))"
    )
    ask(chat, "room again")  # once there is room, saving works and the banner goes
    expect(chat.page.get_by_role("alert")).to_be_hidden()
    assert len(chat.stored()[0]["messages"]) == 4


def test_a_500_message_conversation_renders_and_a_reply_touches_only_itself(
    chat: ChatPage,
) -> None:
    pairs = [(f"question {i}", f"answer **{i}** with `code`") for i in range(250)]
    chat.seed(conversation("Long one", pairs, cid="long"))
    chat.open("/#long")
    expect(chat.messages).to_have_count(500)
    expect(chat.content(chat.last_reply())).to_be_in_viewport()
    expect(chat.content(chat.messages.first)).to_have_text("question 0")
    chat.page.evaluate(
        """() => { window.touched = new Set();
        const list = document.getElementById('messages');
        const old = new Set([...list.children].map((m) => m.dataset.id));
        new MutationObserver((records) => { for (const r of records) {
            const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
            const msg = node.closest('.msg');
            if (msg && old.has(msg.dataset.id)) window.touched.add(msg.dataset.id);
            for (const n of r.removedNodes) if (n.dataset?.id) window.touched.add(n.dataset.id);
        } }).observe(list, {subtree: true, childList: true, characterData: true, attributes: true}); }"""
    )
    ask(chat, "one more")
    expect(chat.messages).to_have_count(502)
    assert chat.page.evaluate("[...window.touched]") == []  # no old message was re-rendered


def test_the_first_versions_single_history_becomes_a_conversation(chat: ChatPage) -> None:
    chat.page.evaluate(
        """localStorage.setItem('quartchat.history', JSON.stringify([
             {role: 'user', content: 'old question'}, {role: 'assistant', content: 'old answer'}]))"""
    )
    chat.reload()
    chat.conversation_link("old question").click()
    expect(chat.messages.locator(".content")).to_have_text(["old question", "old answer"])
    assert chat.page.evaluate("localStorage.getItem('quartchat.history')") is None


def test_renaming_and_undoing_a_delete_keep_the_sidebar_s_order(chat: ChatPage) -> None:
    for first_words in ("oldest", "middle", "newest"):
        chat.page.get_by_role("button", name="New Chat").click()
        ask(chat, first_words)
    order = chat.sidebar.get_by_role("link")
    expect(order).to_have_text(["newest", "middle", "oldest"])
    chat.sidebar.get_by_role("button", name="Rename “oldest”").click()
    title = chat.page.get_by_label("Conversation title")
    title.fill("oldest, renamed")
    title.press("Enter")
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
    chat.sidebar.get_by_role("button", name="Delete “middle”").click()
    expect(order).to_have_text(["newest", "oldest, renamed"])
    chat.page.get_by_role("button", name="Undo").click()
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
    chat.reload()
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
