"""The keyboard: where Esc stops a reply, the `?` panel of shortcuts (the same list as
docs/ui.md), the skip link that is the first Tab stop, the message box focused on load, and Enter
while a reply streams."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import (
    ROOT,
    TOUCH_PHONE,
    ChatPage,
    conversation,
    needs_chromium,
    press_outside_fields,
)

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
    press_outside_fields(chat.page, "?")
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
    press_outside_fields(chat.page, "?")
    cells = chat.page.locator("#shortcuts tbody tr td:first-child").all_text_contents()
    assert [re.sub(r"\s+", " ", c).strip() for c in cells] == documented_keys()


def test_the_skip_link_comes_first_and_skips_to_the_message_box(chat: ChatPage) -> None:
    chat.seed(conversation("Kept", [("q", "a")], cid="kept"))
    chat.open("/#kept")
    chat.reload()
    expect(chat.conversation_link("Kept")).to_be_visible()
    # The page focuses the message box on load; Tab from the top of the page (a click on the
    # sidebar's top edge, before New Chat) goes back one stop to the skip link.
    chat.page.mouse.click(2, 2)
    chat.page.keyboard.press("Shift+Tab")
    skip = chat.page.get_by_role("link", name="Skip to chat")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    chat.page.keyboard.press("Enter")
    expect(chat.input).to_be_focused()
    assert chat.page.evaluate("location.hash") == "#kept"  # the address still names the chat
    expect(chat.messages).to_have_count(2)


def test_typing_right_after_the_page_loads_goes_into_the_message_box(chat: ChatPage) -> None:
    chat.page.keyboard.type("hello there")
    expect(chat.input).to_have_value("hello there")
    chat.page.keyboard.press("Enter")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: hello there")


def test_a_conversation_opened_from_the_address_has_the_message_box_focused(
    chat: ChatPage,
) -> None:
    chat.seed(conversation("Kept", [("q", "a")], cid="kept"))
    chat.open("/#kept")
    chat.reload()
    expect(chat.messages).to_have_count(2)
    expect(chat.input).to_be_focused()


@pytest.mark.parametrize("context_options", [TOUCH_PHONE], ids=["phone"])
def test_a_touch_phone_does_not_pop_up_its_keyboard_on_load(chat: ChatPage) -> None:
    expect(chat.page.locator("body[data-ready]")).to_be_attached()
    expect(chat.input).not_to_be_focused()


def test_enter_while_a_reply_streams_says_why_and_keeps_the_text(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(hanging("Busy"))
    chat.send("first")
    expect(chat.content(chat.last_reply())).to_have_text("Busy")
    asked = len(fake.chat_requests())
    chat.input.fill("second")
    chat.input.press("Enter")
    said = chat.page.get_by_role("status").filter(has_text="A reply is still being written")
    expect(said).to_be_visible()
    expect(said).to_contain_text("Stop")
    expect(chat.input).to_have_value("second")  # kept, to send once the reply is done
    expect(chat.user_messages).to_have_count(1)
    assert len(fake.chat_requests()) == asked
    chat.stop_button.click()
    chat.wait_until_idle()
    chat.input.press("Enter")
    expect(chat.user_messages).to_have_count(2)
