"""Issue 22's keyboard, touch and model-picker fixes, logged in (conversations on the server): the
message box has the focus on load, Enter while a reply streams says why, the conversation list is
one Tab stop with F2 and Delete, every message's actions show on a touch phone, and the model
picked in the top bar is the one the server asks for and keeps."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from ...fake_upstream import FakeUpstream, Reply, completion_chunks
from ..browser import TOUCH_PHONE, ChatPage, ask, needs_chromium
from .people import AdminAPI, Person, log_in, open_page

pytestmark = needs_chromium


@pytest.fixture
def chat(page: Page, admin_api: AdminAPI) -> ChatPage:
    """The chat page of a user of their own, logged in."""
    person: Person = admin_api.new_user()
    log_in(page.context, person.email)
    return ChatPage(open_page(page, "/"))


def test_typing_right_after_the_page_loads_goes_into_the_message_box(chat: ChatPage) -> None:
    chat.page.keyboard.type("straight away")
    chat.page.keyboard.press("Enter")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: straight away")


def test_enter_while_a_reply_streams_says_why_and_keeps_the_text(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["Busy"])[:2], hang=True))
    chat.send("first")
    expect(chat.content(chat.last_reply())).to_have_text("Busy")
    chat.input.fill("second")
    chat.input.press("Enter")
    expect(chat.page.get_by_role("status").filter(has_text="still being written")).to_be_visible()
    expect(chat.input).to_have_value("second")
    expect(chat.user_messages).to_have_count(1)
    chat.stop_button.click()


def test_the_conversation_list_is_one_tab_stop_with_rename_and_delete_keys(
    chat: ChatPage,
) -> None:
    ask(chat, "older")
    chat.page.get_by_role("button", name="New Chat").click()
    ask(chat, "newer")
    chat.page.get_by_label("Search conversations").focus()
    chat.page.keyboard.press("Tab")
    newer = chat.conversation_link("newer")
    expect(newer).to_be_focused()  # the open conversation
    chat.page.keyboard.press("Tab")
    expect(chat.conversation_link("older")).not_to_be_focused()
    expect(chat.sidebar.locator(":focus")).to_have_count(0)  # out of the list in one stop
    newer.focus()
    chat.page.keyboard.press("ArrowDown")
    chat.page.keyboard.press("F2")
    title = chat.page.get_by_label("Conversation title")
    title.fill("older, renamed")
    title.press("Enter")
    expect(chat.conversation_link("older, renamed")).to_be_focused()
    chat.reload()
    expect(chat.conversation_link("older, renamed")).to_be_visible()  # kept by the server
    chat.conversation_link("older, renamed").focus()
    chat.page.keyboard.press("Delete")
    expect(chat.page.locator("#toast")).to_contain_text("Deleted “older, renamed”.")
    chat.reload()
    expect(chat.sidebar.get_by_role("link")).to_have_text(["newer"])


@pytest.mark.parametrize("context_options", [TOUCH_PHONE], ids=["phone"])
def test_every_message_s_actions_show_on_a_touch_phone(chat: ChatPage) -> None:
    chat.input.fill("one")
    chat.send_button.click()  # a touch keyboard's Enter makes a new line
    expect(chat.content(chat.last_reply())).to_have_text("Echo: one")
    chat.wait_until_idle()
    chat.input.fill("two")
    chat.send_button.click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: two")
    chat.wait_until_idle()
    buttons = chat.messages.locator(".actions > button")
    expect(buttons).to_have_count(8)
    for button in buttons.all():
        expect(button).to_have_css("opacity", "1")


def test_the_model_picked_in_the_top_bar_is_asked_for_and_kept(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    picker = chat.page.get_by_role("banner").get_by_role("combobox", name="Model")
    picker.click()
    chat.page.keyboard.type("large")
    # The models list may still be on its way: a person waits to see the match before Enter.
    expect(chat.page.get_by_role("option", name="fake-large")).to_be_visible()
    chat.page.keyboard.press("Enter")
    expect(picker).to_have_value("fake-large")
    ask(chat, "which model?")
    assert fake.chat_requests()[-1].json["model"] == "fake-large"
    cid = chat.page.evaluate("decodeURIComponent(location.hash.slice(1))")
    saved = chat.page.context.request.get(f"/api/conversations/{cid}").json()
    assert saved["settings"]["model"] == "fake-large"  # the server keeps it with the conversation
    chat.reload()
    expect(picker).to_have_value("fake-large")
