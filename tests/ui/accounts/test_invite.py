"""Invites: the admin page makes a link, shown once; another browser opening it makes an account
and lands in the chat logged in; a withdrawn link no longer works."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, Page, expect

from ..browser import needs_chromium
from .people import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    AdminAPI,
    everything_on,
    log_in,
    new_email,
    open_page,
)

pytestmark = needs_chromium


@pytest.fixture
def admin_page(page: Page) -> Page:
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    return open_page(page, "/admin")


def invites(page: Page) -> Locator:
    return page.get_by_role("region", name="Invites", exact=True)


def make_invite_link(page: Page, email: str = "", role: str = "User") -> str:
    invites(page).get_by_label("Email").fill(email)
    invites(page).get_by_label("Role").select_option(label=role)
    invites(page).get_by_role("button", name="Make an invite link").click()
    link = page.get_by_role("textbox", name="Invite link", exact=True)
    expect(link).to_be_visible()
    return link.input_value()


def accept(page: Page, link: str, password: str = PASSWORD, email: str | None = None) -> None:
    open_page(page, link)
    if email is not None:
        page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(password)
    page.get_by_role("button", name="Create my account").click()
    expect(page.locator("body[data-ready][data-default-model]")).to_be_attached()  # the chat


def test_an_invite_link_from_the_admin_page_logs_the_invited_person_in_elsewhere(
    admin_page: Page, other_browser: Callable[[], Page]
) -> None:
    email = new_email("invited")
    link = make_invite_link(admin_page, email)
    theirs = other_browser()
    accept(theirs, link)
    me = theirs.request.get("/api/auth/me").json()
    assert (me["email"], me["role"]) == (email, "user")


def test_an_invite_for_an_email_shows_it_fixed(
    admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    email = new_email("fixed")
    theirs = open_page(other_browser(), "/invite?token=" + admin_api.invite(email))
    expect(theirs.get_by_label("Email")).to_have_value(email)
    expect(theirs.get_by_label("Email")).not_to_be_editable()
    expect(theirs.get_by_label("Password", exact=True)).to_be_focused()


def test_an_invite_without_an_email_asks_for_one(
    admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    email = new_email("open-invite")
    theirs = other_browser()
    accept(theirs, "/invite?token=" + admin_api.invite(), email=email)
    assert theirs.request.get("/api/auth/me").json()["email"] == email


def test_an_admin_invite_makes_an_admin(
    admin_page: Page, other_browser: Callable[[], Page]
) -> None:
    link = make_invite_link(admin_page, new_email("new-admin"), role="Admin")
    theirs = other_browser()
    accept(theirs, link)
    assert theirs.request.get("/api/auth/me").json()["role"] == "admin"


def test_a_new_invite_link_takes_the_focus(admin_page: Page) -> None:
    make_invite_link(admin_page, new_email("focus"))
    expect(admin_page.get_by_role("textbox", name="Invite link", exact=True)).to_be_focused()


def test_the_invite_link_is_shown_only_once(admin_page: Page) -> None:
    link = make_invite_link(admin_page, new_email("once"))
    admin_page.get_by_role("button", name="I have copied it").click()
    token = link.split("token=")[1]
    assert token not in everything_on(admin_page)
    open_page(admin_page, "/admin")
    assert token not in everything_on(admin_page)


def test_a_withdrawn_invite_link_says_it_is_not_valid(
    admin_page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    email = new_email("withdrawn")
    token = admin_api.invite(email)
    admin_page.reload()
    invites(admin_page).get_by_role("button", name=f"Withdraw the invite for {email}").click()
    admin_page.get_by_role("dialog").get_by_role("button", name="Withdraw").click()
    expect(invites(admin_page).get_by_role("listitem").filter(has_text=email)).to_have_count(0)
    theirs = open_page(other_browser(), "/invite?token=" + token)
    expect(theirs.get_by_role("alert")).to_have_text(
        "This invite link is not valid: used, expired or withdrawn."
    )
    expect(theirs.get_by_role("button", name="Create my account")).to_be_hidden()


def test_a_used_invite_leaves_the_list_of_waiting_invites(
    admin_page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    email = new_email("used")
    token = admin_api.invite(email)
    admin_page.reload()
    waiting = invites(admin_page).get_by_role("listitem").filter(has_text=email)
    expect(waiting).to_have_count(1)
    accept(other_browser(), "/invite?token=" + token)
    admin_page.reload()
    expect(waiting).to_have_count(0)
