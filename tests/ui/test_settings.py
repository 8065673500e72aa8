"""The settings panel: what it sets reaches the upstream request; it belongs to a conversation."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from ..fake_upstream import FakeUpstream
from .browser import ChatPage, needs_chromium

pytestmark = needs_chromium


def open_settings(page: Page) -> None:
    page.get_by_role("button", name="Settings").click()
    expect(page.get_by_role("dialog", name="Chat settings")).to_be_visible()


def close_settings(page: Page) -> None:
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_be_hidden()


def test_the_model_list_comes_from_the_server(chat: ChatPage) -> None:
    open_settings(chat.page)
    options = chat.page.get_by_label("Model").locator("option")
    expect(options).to_have_text(["gpt-4o-mini (default)", "fake-large", "fake-small"])


def test_settings_reach_the_request_body(chat: ChatPage, fake: FakeUpstream) -> None:
    page = chat.page
    open_settings(page)
    page.get_by_label("Model").select_option("fake-small")
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Top P").fill("0.9")
    page.get_by_label("Max tokens").fill("77")
    close_settings(page)
    expect(page.get_by_role("button", name="Settings")).to_contain_text("fake-small")
    chat.send("hello")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: hello")
    body = fake.chat_requests()[-1].json
    assert body["model"] == "fake-small"
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 77
    assert body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "hello"},
    ]


def test_empty_fields_leave_the_choice_to_the_server(chat: ChatPage, fake: FakeUpstream) -> None:
    chat.send("defaults please")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: defaults please")
    body = fake.chat_requests()[-1].json
    assert body["model"] == "gpt-4o-mini"  # the server's configured default
    assert not {"temperature", "top_p", "max_tokens"} & body.keys()


def test_an_out_of_range_value_says_it_is_not_sent_in_the_panel_and_on_the_page(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    open_settings(chat.page)
    temperature = chat.page.get_by_label("Temperature")
    temperature.fill("0.7")
    temperature.fill("5")
    said = "Temperature must be between 0 and 2, so 5 is not sent (the server's default applies)."
    expect(chat.page.locator("#set-temperature-hint")).to_have_text(said)
    expect(temperature).to_have_accessible_description(said)
    close_settings(chat.page)
    note = chat.page.get_by_role("alert")
    expect(note).to_contain_text(said)
    chat.send("how warm?")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: how warm?")
    assert "temperature" not in fake.chat_requests()[-1].json  # not the 0.7 typed before either
    note.get_by_role("button", name="Open settings").click()
    temperature.fill("1.5")
    hint = chat.page.locator("#set-temperature-hint")
    expect(hint).to_have_text("0\u20132.")  # the plain hint again
    close_settings(chat.page)
    expect(note).to_be_hidden()
    chat.send("and now?")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: and now?")
    assert fake.chat_requests()[-1].json["temperature"] == 1.5


def test_an_out_of_range_value_is_flagged_and_not_sent(chat: ChatPage, fake: FakeUpstream) -> None:
    open_settings(chat.page)
    temperature = chat.page.get_by_label("Temperature")
    temperature.fill("5")
    expect(temperature).to_have_attribute("aria-invalid", "true")
    close_settings(chat.page)
    chat.send("still works")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: still works")
    assert "temperature" not in fake.chat_requests()[-1].json


def test_the_system_prompt_belongs_to_its_conversation(chat: ChatPage) -> None:
    page = chat.page
    open_settings(page)
    page.get_by_label("Model").select_option("fake-small")
    page.get_by_label("System prompt").fill("You are a pirate.")
    close_settings(page)
    chat.send("ahoy")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: ahoy")
    page.get_by_role("button", name="New Chat").click()
    open_settings(page)
    expect(page.get_by_label("System prompt")).to_have_value("")
    expect(page.get_by_label("Model")).to_have_value("fake-small")  # the last model carries over
    close_settings(page)
    chat.reload()
    chat.conversation_link("ahoy").click()
    open_settings(page)
    expect(page.get_by_label("System prompt")).to_have_value("You are a pirate.")
