"""Where an opened conversation lands, for a logged-in user (conversations and search on the
server): as without accounts (tests/ui/test_landing.py)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from ..browser import ChatPage, conversation, needs_chromium
from ..test_landing import COUNT_DRAWN, NEEDLE, at_bottom, long_conversation, settle
from .people import AdminAPI, log_in, open_page

pytestmark = needs_chromium


def open_with_a_long_conversation(page: Page, admin_api: AdminAPI) -> tuple[ChatPage, str]:
    """The page of a new user whose one conversation (imported) is long; and its id."""
    log_in(page.context, admin_api.new_user().email)
    other = conversation("Unrelated", [("hi", "hello")], cid="other", updated=9)
    imported = page.context.request.post(
        "/api/import",
        data={"format": "quartchat", "version": 1, "conversations": [long_conversation(), other]},
    )
    assert imported.ok, imported.text()
    chat = ChatPage(open_page(page, "/"))
    listed = page.context.request.get("/api/conversations").json()["items"]
    return chat, next(str(c["id"]) for c in listed if c["title"] == "A long conversation")


def test_a_long_conversation_opened_from_the_sidebar_lands_at_its_newest_message(
    page: Page, admin_api: AdminAPI
) -> None:
    chat, _ = open_with_a_long_conversation(page, admin_api)
    page.evaluate(COUNT_DRAWN)
    chat.conversation_link("A long conversation").click()
    settle(page, 40)
    assert at_bottom(page)
    expect(chat.content(chat.last_reply())).to_be_in_viewport()
    assert page.evaluate("window.drawn") == 40  # drawn once, not drawn and then drawn again


def test_a_search_result_opens_its_conversation_at_the_message_found_marked(
    page: Page, admin_api: AdminAPI
) -> None:
    chat, cid = open_with_a_long_conversation(page, admin_api)
    found_id = next(
        m["id"]
        for m in page.context.request.get(f"/api/conversations/{cid}").json()["messages"]
        if NEEDLE in m["content"]
    )
    page.get_by_role("searchbox").fill(NEEDLE)
    expect(chat.conversation_link("Unrelated")).to_have_count(0)  # the results are in
    result = chat.conversation_link("A long conversation")
    result.click()
    settle(page, 40)
    found = page.locator(f'#messages .msg[data-id="{found_id}"]')
    expect(found).to_have_class("msg assistant match")
    expect(found.get_by_text(NEEDLE)).to_be_in_viewport()
    assert not at_bottom(page)
