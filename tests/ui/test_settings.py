"""The settings: the model picker in the top bar (a searchable combobox of the server's models)
and the settings panel; what they set reaches the upstream request, and belongs to a
conversation."""

from __future__ import annotations

import json
import time

from playwright.sync_api import Locator, Page, Route, expect

from ..fake_upstream import FakeUpstream
from .browser import ChatPage, axe_violations, needs_chromium

pytestmark = needs_chromium


def open_settings(page: Page) -> None:
    page.get_by_role("button", name="Settings").click()
    expect(page.get_by_role("dialog", name="Chat settings")).to_be_visible()


def close_settings(page: Page) -> None:
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_role("dialog")).to_be_hidden()


def picker(page: Page) -> Locator:
    """The model picker, in the top bar."""
    return page.get_by_role("banner").get_by_role("combobox", name="Model")


def models(page: Page) -> Locator:
    return page.get_by_role("listbox", name="Models").get_by_role("option")


def pick_model(page: Page, name: str) -> None:
    """Type part of a model's name into the picker and press Enter, as a person would."""
    picker(page).click()
    page.keyboard.type(name)
    expect(models(page).first).to_have_text(name)
    page.keyboard.press("Enter")
    expect(picker(page)).to_have_value(name)


def test_the_model_picker_in_the_top_bar_lists_the_server_s_models(chat: ChatPage) -> None:
    field = picker(chat.page)
    expect(field).to_have_value("gpt-4o-mini")
    expect(field).to_have_accessible_description("(default)")
    expect(field).to_have_attribute("aria-expanded", "false")
    field.click()
    expect(field).to_have_attribute("aria-expanded", "true")
    expect(models(chat.page)).to_have_text(["gpt-4o-mini (default)", "fake-large", "fake-small"])
    open_settings(chat.page)  # the panel keeps the other settings only
    expect(chat.page.get_by_role("dialog").get_by_label("Model")).to_have_count(0)


def test_typing_filters_the_models_and_enter_picks_the_active_one(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    field = picker(chat.page)
    field.focus()
    chat.page.keyboard.type("SMA")
    expect(models(chat.page)).to_have_text(["fake-small"])
    active = models(chat.page).first.get_attribute("id")
    expect(field).to_have_attribute("aria-activedescendant", active or "?")
    chat.page.keyboard.press("Enter")
    expect(field).to_have_value("fake-small")
    expect(field).to_have_attribute("aria-expanded", "false")
    expect(field).to_have_accessible_description("")
    chat.send("which model?")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: which model?")
    assert fake.chat_requests()[-1].json["model"] == "fake-small"


def test_arrow_keys_walk_the_list_and_escape_closes_it_keeping_the_model(chat: ChatPage) -> None:
    field = picker(chat.page)
    field.focus()
    chat.page.keyboard.press("ArrowDown")  # opens the whole list at the model in use
    expect(models(chat.page)).to_have_count(3)
    expect(models(chat.page).first).to_have_attribute("aria-selected", "true")
    chat.page.keyboard.press("ArrowDown")
    expect(models(chat.page).nth(1)).to_have_attribute("aria-selected", "true")
    chat.page.keyboard.press("Escape")
    expect(models(chat.page)).to_have_count(0)
    expect(field).to_have_value("gpt-4o-mini")
    chat.page.keyboard.type("large")
    chat.page.keyboard.press("Escape")
    expect(field).to_have_value("gpt-4o-mini")  # typing alone changes nothing
    chat.page.keyboard.press("ArrowDown")
    chat.page.keyboard.press("ArrowDown")
    chat.page.keyboard.press("Enter")
    expect(field).to_have_value("fake-large")


def test_a_typed_name_not_listed_is_refused_when_the_server_lists_the_models(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    field = picker(chat.page)
    field.focus()
    chat.page.keyboard.type("my-own-model")
    expect(chat.page.get_by_text("No listed model matches “my-own-model”.")).to_be_visible()
    chat.page.keyboard.press("Enter")
    chat.page.keyboard.press("Escape")
    expect(field).to_have_value("gpt-4o-mini")
    chat.send("still the default")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: still the default")
    assert fake.chat_requests()[-1].json["model"] == "gpt-4o-mini"


def test_a_typed_name_is_taken_when_the_server_allows_any_model(page: Page) -> None:
    def any_model(route: Route) -> None:
        listed = {"default": "gpt-4o-mini", "models": ["gpt-4o-mini", "fake-small"]}
        route.fulfill(json={**listed, "any_model": True})

    page.route("**/api/models", any_model)
    chat = ChatPage(page).open()
    field = picker(page)
    field.focus()
    page.keyboard.type("my-own-model")
    expect(models(page)).to_have_text(["Use “my-own-model”"])
    page.keyboard.press("Enter")
    expect(field).to_have_value("my-own-model")
    with page.expect_request("**/api/chat/stream") as asked:
        chat.send("hi")
    assert json.loads(asked.value.post_data or "{}")["model"] == "my-own-model"


def test_a_name_typed_before_the_models_arrive_is_matched_when_they_do(page: Page) -> None:
    held: list[Route] = []
    page.route("**/api/models", lambda route: held.append(route))
    ChatPage(page).open()
    field = picker(page)
    field.focus()
    page.keyboard.type("small")
    expect(page.get_by_text("No listed model matches “small”.")).to_be_visible()
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright deliver the held request to the handler
    assert held, "the page did not ask for the models"
    held[0].fulfill(json={"default": "gpt-4o-mini", "models": ["gpt-4o-mini", "fake-small"]})
    expect(models(page)).to_have_text(["fake-small"])  # the open list is filtered again
    page.keyboard.press("Enter")
    expect(field).to_have_value("fake-small")


def test_the_picker_says_which_upstream_is_down_above_the_models_left(page: Page) -> None:
    warning = "The upstream 'ollama' cannot be reached: its models are left out for now."

    def one_down(route: Route) -> None:
        listed = {"default": "gpt-4o-mini", "models": ["gpt-4o-mini", "fake-small"]}
        route.fulfill(json={**listed, "any_model": False, "warnings": [warning], "prices": {}})

    page.route("**/api/models", one_down)
    ChatPage(page).open()
    field = picker(page)
    expect(field).to_have_accessible_description(f"(default) {warning}")
    field.click()
    expect(page.get_by_text(warning)).to_be_visible()
    expect(models(page)).to_have_text(["gpt-4o-mini (default)", "fake-small"])
    assert axe_violations(page) == []


def test_settings_reach_the_request_body(chat: ChatPage, fake: FakeUpstream) -> None:
    page = chat.page
    pick_model(page, "fake-small")
    open_settings(page)
    page.get_by_label("System prompt").fill("Answer briefly.")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Top P").fill("0.9")
    page.get_by_label("Max tokens").fill("77")
    close_settings(page)
    expect(picker(page)).to_have_value("fake-small")
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
    pick_model(page, "fake-small")
    open_settings(page)
    page.get_by_label("System prompt").fill("You are a pirate.")
    close_settings(page)
    chat.send("ahoy")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: ahoy")
    page.get_by_role("button", name="New Chat").click()
    open_settings(page)
    expect(page.get_by_label("System prompt")).to_have_value("")
    expect(picker(page)).to_have_value("fake-small")  # the last model carries over
    close_settings(page)
    chat.reload()
    chat.conversation_link("ahoy").click()
    open_settings(page)
    expect(page.get_by_label("System prompt")).to_have_value("You are a pirate.")
