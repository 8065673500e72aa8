"""The new states of the page at scale (the banner of unreadable entries, the version switcher with
a folded long question, the import and export dialog, a reply being written in another tab), in
light and dark: axe-core finds no serious or critical violation; screenshots as artifacts."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, axe_violations, needs_chromium, screenshot, seed_many
from .test_transfer import chatgpt_export, import_file, open_transfer

pytestmark = needs_chromium

schemes = pytest.mark.parametrize(
    "context_options", [{"color_scheme": "light"}, {"color_scheme": "dark"}], ids=["light", "dark"]
)


def scheme(chat: ChatPage) -> str:
    return (
        "dark"
        if chat.page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        else "light"
    )


@schemes
def test_the_banner_of_unreadable_entries(chat: ChatPage) -> None:
    seed_many(chat.page, 30)
    chat.page.evaluate("localStorage.setItem('quartchat.v1.c.broken', '{not json')")
    chat.reload()
    expect(chat.page.get_by_role("alert")).to_contain_text("1 stored item could not be read")
    screenshot(chat.page, f"unreadable-banner-{scheme(chat)}")
    assert axe_violations(chat.page) == []


@schemes
def test_the_version_switcher_and_a_folded_question(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(
        Reply(chunks=completion_chunks(["A first answer."])),
        Reply(chunks=completion_chunks(["A **second** answer, with `code`."])),
    )
    chat.send(
        "Here is my log:\n" + "\n".join(f"12:00:{i:02} worker {i} started" for i in range(60))
    )
    chat.wait_until_idle()
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_contain_text("second")
    chat.wait_until_idle()
    chat.last_reply().hover()
    expect(chat.last_reply().get_by_role("group", name="Versions")).to_contain_text(
        "Version 2 of 2"
    )
    screenshot(chat.page, f"versions-{scheme(chat)}")
    assert axe_violations(chat.page) == []


@schemes
def test_the_import_and_export_dialog(chat: ChatPage) -> None:
    chat.send("something to export")
    chat.wait_until_idle()
    open_transfer(chat.page)
    import_file(chat.page, "conversations.json", json.dumps(chatgpt_export()).encode())
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_contain_text("Imported 1")
    screenshot(chat.page, f"transfer-{scheme(chat)}")
    assert axe_violations(chat.page) == []


@schemes
def test_a_reply_being_written_in_another_tab(chat: ChatPage, fake: FakeUpstream) -> None:
    chat.send("first")
    chat.wait_until_idle()
    other = ChatPage(chat.page.context.new_page()).open("/" + chat.page.evaluate("location.hash"))
    fake.reply_with(Reply(chunks=completion_chunks(["Still", " going"])[:3], hang=True))
    chat.send("a long one")
    expect(other.last_reply()).to_contain_text("Being written in another tab")
    expect(other.content(other.last_reply())).to_have_text("Still going")
    screenshot(other.page, f"elsewhere-{scheme(chat)}")
    assert axe_violations(other.page) == []
    chat.stop_button.click()
    other.page.close()
