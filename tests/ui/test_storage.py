"""What is stored is checked when it is read: a bad entry is skipped and reported (with a way to
export it as it is), never fatal; and what is typed survives a reload."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import expect

from .browser import ChatPage, ask, conversation, needs_chromium

pytestmark = needs_chromium

PARTLY_BAD = {
    "id": "partly",
    "title": "Partly bad",
    "createdAt": 0,
    "updatedAt": 5,
    "settings": {},
    "messages": [
        {"id": "u0", "role": "user", "content": "good question", "createdAt": 0},
        None,
        {"id": "a0", "role": "assistant", "content": 42, "status": "done"},
        {"id": "a1", "role": "assistant", "content": "good answer", "status": "done"},
    ],
}


def test_an_unreadable_index_does_not_stop_the_page(chat: ChatPage) -> None:
    chat.seed(conversation("Kept", [("q", "a")], cid="kept"))
    chat.page.evaluate("localStorage.setItem('quartchat.v1.index', '[null]')")
    chat.reload()  # the page starts ...
    expect(chat.conversation_link("Kept")).to_be_visible()  # ... rebuilds the list ...
    ask(chat, "still works")  # ... and sends


def test_unreadable_entries_are_skipped_reported_and_can_be_exported_as_stored(
    chat: ChatPage,
) -> None:
    chat.page.evaluate(
        """(partly) => {
          localStorage.setItem('quartchat.v1.c.partly', JSON.stringify(partly));
          localStorage.setItem('quartchat.v1.c.broken', '{"id": "broken", "messages": [');
          localStorage.setItem('quartchat.v1.c.wrong', JSON.stringify({id: 'wrong', messages: 7}));
          localStorage.setItem('quartchat.v1.index', JSON.stringify([
            {id: 'partly', title: 'Partly bad', updatedAt: 5}, {id: 'broken', title: 'B', updatedAt: 4},
            {id: 'wrong', title: 'W', updatedAt: 3}]));
        }""",
        PARTLY_BAD,
    )
    chat.reload()
    banner = chat.page.get_by_role("alert")
    expect(banner).to_contain_text("4 stored items could not be read")
    expect(chat.sidebar.get_by_role("link")).to_have_text(["Partly bad"])
    chat.conversation_link("Partly bad").click()
    expect(chat.messages.locator(".content")).to_have_text(["good question", "good answer"])
    with chat.page.expect_download() as download:
        banner.get_by_role("button", name="Export them").click()
    assert download.value.suggested_filename == "quartchat-unreadable.json"
    exported = json.loads(Path(download.value.path()).read_text())
    entries = {e["key"]: e["value"] for e in exported["entries"]}
    assert entries["quartchat.v1.c.broken"] == '{"id": "broken", "messages": ['
    assert json.loads(entries["quartchat.v1.c.partly"]) == PARTLY_BAD
    ask(chat, "more")  # writing to it keeps what could not be read, for a later export
    stored = json.loads(chat.page.evaluate("localStorage.getItem('quartchat.v1.c.partly')"))
    assert None in stored["messages"]
    assert {"id": "a0", "role": "assistant", "content": 42, "status": "done"} in stored["messages"]


def test_a_conversation_with_bad_parents_still_opens(chat: ChatPage) -> None:
    looped = conversation("Loops", [("one", "two"), ("three", "four")], cid="loops")
    messages = looped["messages"]
    messages[0]["parentId"] = messages[3]["id"]  # a cycle
    messages[1]["parentId"] = messages[0]["id"]
    messages[2]["parentId"] = "nowhere"
    messages[3]["parentId"] = messages[2]["id"]
    looped["leafId"] = messages[3]["id"]
    chat.page.evaluate(
        "(c) => localStorage.setItem('quartchat.v1.c.loops', JSON.stringify(c))", looped
    )
    chat.open("/#loops")
    expect(chat.messages.locator(".content")).to_have_text(["three", "four"])


def test_what_was_typed_survives_a_reload_for_each_conversation(chat: ChatPage) -> None:
    chat.input.fill("half a thought")
    chat.reload()
    expect(chat.input).to_have_value("half a thought")
    chat.input.fill("first question")
    chat.input.press("Enter")
    chat.wait_until_idle()
    chat.input.fill("a follow-up, not sent yet")
    chat.reload()
    expect(chat.input).to_have_value("a follow-up, not sent yet")
    chat.page.get_by_role("button", name="New Chat").click()
    expect(chat.input).to_have_value("")  # the new chat's draft was sent
    chat.input.fill("for the new chat")
    chat.conversation_link("first question").click()
    expect(chat.input).to_have_value("a follow-up, not sent yet")
    chat.page.get_by_role("button", name="New Chat").click()
    expect(chat.input).to_have_value("for the new chat")


def test_the_check_of_stored_entries_works_without_workers_too(chat: ChatPage) -> None:
    chat.page.context.add_init_script("delete window.Worker")  # it then runs on the page, in slices
    chat.page.evaluate("localStorage.setItem('quartchat.v1.c.broken', '[1, 2')")
    chat.reload()
    expect(chat.page.get_by_role("alert")).to_contain_text("1 stored item could not be read")
