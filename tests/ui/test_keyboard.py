"""The keyboard: where Esc stops a reply, the `?` panel of shortcuts (the same list as
docs/ui.md), and the skip link that is the first Tab stop."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ROOT, ChatPage, conversation, needs_chromium

pytestmark = needs_chromium


def hanging(*words: str) -> Reply:
    """A reply that sends `words`, then keeps the stream open without finishing."""
    return Reply(chunks=completion_chunks(list(words))[: 1 + len(words)], hang=True)


def documented_keys() -> list[str]:
    """The first column of the "Keyboard" table of docs/ui.md."""
    section = (ROOT / "docs" / "ui.md").read_text().split("## Keyboard", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [row.split("|")[1].strip() for row in rows]


def test_escape_in_the_search_box_clears_it_and_leaves_the_reply_streaming(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(hanging("Still", " going"))
    chat.send("a long one")
    expect(chat.content(chat.last_reply())).to_have_text("Still going")
    search = chat.page.get_by_label("Search conversations")
    search.fill("long")
    search.press("Escape")
    expect(search).to_have_value("")
    chat.page.wait_for_timeout(300)
    expect(chat.stop_button).to_be_visible()
    expect(chat.last_reply().locator(".status")).to_have_text("Generating…")


def test_escape_in_the_message_list_stops_the_reply(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(hanging("Some"))
    chat.send("go on")
    expect(chat.content(chat.last_reply())).to_have_text("Some")
    chat.user_messages.last.get_by_role("button", name="Copy message").focus()
    chat.page.keyboard.press("Escape")
    expect(chat.last_reply().locator(".status")).to_have_text("Stopped")


def test_question_mark_opens_the_shortcuts_and_escape_closes_them(chat: ChatPage) -> None:
    chat.page.locator("body").press("?")
    panel = chat.page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Search conversations")
    chat.page.keyboard.press("Escape")
    expect(panel).to_be_hidden()


def test_a_question_mark_typed_in_the_message_box_is_text(chat: ChatPage) -> None:
    chat.input.press("?")
    expect(chat.input).to_have_value("?")
    expect(chat.page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()


def test_the_shortcuts_panel_lists_the_keys_of_the_docs(chat: ChatPage) -> None:
    chat.page.locator("body").press("?")
    cells = chat.page.locator("#shortcuts tbody tr td:first-child").all_text_contents()
    assert [re.sub(r"\s+", " ", c).strip() for c in cells] == documented_keys()


def test_the_first_tab_stop_skips_to_the_message_box(chat: ChatPage) -> None:
    chat.seed(conversation("Kept", [("q", "a")], cid="kept"))
    chat.open("/#kept")
    chat.reload()
    expect(chat.conversation_link("Kept")).to_be_visible()
    chat.page.keyboard.press("Tab")
    skip = chat.page.get_by_role("link", name="Skip to chat")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    chat.page.keyboard.press("Enter")
    expect(chat.input).to_be_focused()
    assert chat.page.evaluate("location.hash") == "#kept"  # the address still names the chat
    expect(chat.messages).to_have_count(2)
