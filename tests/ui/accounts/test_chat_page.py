"""The chat page with accounts: who is logged in, and links to the account pages."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from ..browser import ChatPage, conversation, needs_chromium
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, AdminAPI, log_in, open_page

pytestmark = needs_chromium


def test_the_chat_page_says_who_is_logged_in_and_links_to_the_account_page(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    open_page(page, "/")
    expect(page.get_by_text(person.email)).to_be_visible()
    page.get_by_role("link", name="Account").click()
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()


def test_a_user_who_is_not_an_admin_gets_no_admin_link(page: Page, admin_api: AdminAPI) -> None:
    log_in(page.context, admin_api.new_user().email)
    open_page(page, "/")
    expect(page.get_by_role("link", name="Account")).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)


def test_an_admin_gets_a_link_to_the_admin_page(page: Page) -> None:
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    open_page(page, "/")
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Admin", exact=True)).to_be_visible()


def test_people_sharing_a_browser_never_see_each_other_s_conversations(
    page: Page, admin_api: AdminAPI
) -> None:
    ann, bob = admin_api.new_user("ann"), admin_api.new_user("bob")
    log_in(page.context, ann.email)
    chat = ChatPage(open_page(page, "/"))
    chat.send("ann's secret plan")
    chat.wait_until_idle()
    expect(chat.conversation_link("ann's secret plan")).to_be_visible()
    page.context.clear_cookies()  # the same browser (its storage kept), another person
    log_in(page.context, bob.email)
    chat = ChatPage(open_page(page, "/"))
    expect(chat.sidebar.get_by_role("link")).to_have_count(0)
    chat.send("bob's question")
    chat.wait_until_idle()
    expect(chat.conversation_link("bob's question")).to_be_visible()
    assert "secret plan" not in page.content()
    page.context.clear_cookies()
    log_in(page.context, ann.email)
    chat = ChatPage(open_page(page, "/"))
    expect(chat.conversation_link("ann's secret plan")).to_be_visible()
    expect(chat.conversation_link("bob's question")).to_have_count(0)


def test_the_first_login_adopts_conversations_kept_before_accounts(
    page: Page, admin_api: AdminAPI
) -> None:
    open_page(page, "/login")
    page.evaluate(
        """(c) => { localStorage.setItem('quartchat.v1.c.' + c.id, JSON.stringify(c));
                  localStorage.setItem('quartchat.v1.index', JSON.stringify([
                    {id: c.id, title: c.title, updatedAt: c.updatedAt}])); }""",
        conversation("kept from before accounts", [("q", "a")], cid="old1"),
    )
    log_in(page.context, admin_api.new_user().email)
    chat = ChatPage(open_page(page, "/"))
    expect(chat.conversation_link("kept from before accounts")).to_be_visible()
    assert page.evaluate("localStorage.getItem('quartchat.v1.c.old1')") is None
