"""The account page: who I am, my password, where I am logged in, my API tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from ...service import Service
from ..browser import ChatPage, needs_chromium
from .people import (
    PASSWORD,
    AdminAPI,
    Person,
    can_log_in,
    everything_on,
    fill_login,
    log_in,
    open_page,
    path_of,
)

pytestmark = needs_chromium

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def person(page: Page, admin_api: AdminAPI) -> Person:
    """A user of their own, logged in in the test's browser, on the account page."""
    person = admin_api.new_user()
    log_in(page.context, person.email)
    open_page(page, "/account")
    return person


def panel(page: Page, name: str) -> Locator:
    return page.get_by_role("region", name=name, exact=True)


def bearer(service: Service, token: str) -> int:
    """The status of a script's call with the token, as `curl -H 'Authorization: Bearer …'`."""
    response = httpx.get(service.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def test_the_account_page_shows_my_email_and_role(page: Page, person: Person) -> None:
    expect(page.get_by_text("Logged in as")).to_have_text(f"Logged in as {person.email} user")


def change_password(page: Page, current: str, new: str, again: str) -> None:
    form = panel(page, "Change the password")
    form.get_by_label("Current password").fill(current)
    form.get_by_label("New password", exact=True).fill(new)
    form.get_by_label("New password again").fill(again)
    form.get_by_role("button", name="Change the password").click()


def test_a_changed_password_replaces_the_old_one(
    page: Page, person: Person, service: Service
) -> None:
    change_password(page, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    assert can_log_in(service.url, person.email, PASSWORD) == 401
    assert can_log_in(service.url, person.email, NEW_PASSWORD) == 200


def test_this_browser_stays_logged_in_after_changing_the_password(
    page: Page, person: Person
) -> None:
    change_password(page, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    open_page(page, "/account")
    assert path_of(page) == "/account"


def test_a_wrong_current_password_is_said_so_at_that_field(page: Page, person: Person) -> None:
    change_password(page, "not my password", NEW_PASSWORD, NEW_PASSWORD)
    expect(panel(page, "Change the password").get_by_role("alert")).to_have_text(
        "The current password is not right."
    )
    expect(page.get_by_label("Current password")).to_be_focused()


def sessions(page: Page) -> Locator:
    return panel(page, "Where you are logged in").get_by_role("listitem")


def test_my_sessions_are_listed_with_this_browser_marked(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> None:
    log_in(other_browser().context, person.email)
    page.reload()
    expect(sessions(page)).to_have_count(2)
    expect(sessions(page).filter(has_text="This browser")).to_have_count(1)


def test_ending_another_session_logs_that_browser_out(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> None:
    phone = other_browser()
    log_in(phone.context, person.email)
    page.reload()
    other = sessions(page).filter(has_not_text="This browser")
    other.get_by_role("button", name="End").click()
    expect(sessions(page)).to_have_count(1)
    phone.goto("/account")
    expect(phone.get_by_role("heading", name="Log in")).to_be_visible()
    assert path_of(phone) == "/login?next=/account"


def test_log_out_everywhere_logs_out_this_and_every_other_browser(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> None:
    phone = other_browser()
    log_in(phone.context, person.email)
    page.get_by_role("button", name="Log out everywhere").click()
    page.get_by_role("dialog").get_by_role("button", name="Log out everywhere").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    phone.goto("/account")
    expect(phone.get_by_role("heading", name="Log in")).to_be_visible()


def test_log_out_everywhere_revokes_my_tokens_unless_i_untick_it(
    page: Page, person: Person, service: Service
) -> None:
    kept = page.request.post("/api/auth/tokens", data={"name": "kept"}).json()["token"]
    page.get_by_role("button", name="Log out everywhere").click()
    dialog = page.get_by_role("dialog", name="Log out everywhere?")
    dialog.get_by_label("Revoke my API tokens too").uncheck()
    dialog.get_by_role("button", name="Log out everywhere").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert bearer(service, kept) == 200
    log_in(page.context, person.email)
    open_page(page, "/account")
    page.get_by_role("button", name="Log out everywhere").click()
    expect(dialog.get_by_label("Revoke my API tokens too")).to_be_checked()  # every time
    dialog.get_by_role("button", name="Log out everywhere").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert bearer(service, kept) == 401


def test_cancelling_log_out_everywhere_logs_nobody_out(page: Page, person: Person) -> None:
    page.get_by_role("button", name="Log out everywhere").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Log out everywhere")).to_be_focused()
    assert page.request.get("/api/auth/me").status == 200


def create_token(
    page: Page, name: str, *, password: str | None = None, expires: str | None = None
) -> str:
    tokens = panel(page, "API tokens")
    tokens.get_by_label("Name of a new token").fill(name)
    if expires is not None:
        tokens.get_by_label("Expires").select_option(label=expires)
    if password is not None:
        tokens.get_by_label("Your password").fill(password)
    tokens.get_by_role("button", name="Create a token").click()
    shown = page.get_by_label("New API token")
    expect(shown).to_be_visible()
    return shown.input_value()


def test_a_new_token_takes_the_focus_and_gives_it_back_to_the_name_field(
    page: Page, person: Person
) -> None:
    create_token(page, "focus")
    expect(page.get_by_label("New API token")).to_be_focused()
    page.get_by_role("button", name="I have copied it").click()
    expect(page.get_by_label("Name of a new token")).to_be_focused()


def test_a_new_api_token_works_for_a_script(page: Page, person: Person, service: Service) -> None:
    token = create_token(page, "laptop script")
    assert token.startswith("qc_")
    assert bearer(service, token) == 200


def token_row(page: Page, name: str) -> Locator:
    return panel(page, "API tokens").get_by_role("listitem").filter(has_text=name)


def test_a_token_made_with_my_password_shows_when_it_expires(
    page: Page, person: Person, service: Service
) -> None:
    token = create_token(page, "monthly", password=PASSWORD, expires="In 30 days")
    assert bearer(service, token) == 200
    row = token_row(page, "monthly")
    expect(row).to_contain_text("last used never")
    expect(row).to_contain_text("expires")
    made, expires = row.locator("time").all()  # "last used never" is no time
    lifetime = datetime.fromisoformat(str(expires.get_attribute("datetime"))) - (
        datetime.fromisoformat(str(made.get_attribute("datetime")))
    )
    assert lifetime == timedelta(days=30)
    create_token(page, "forever", expires="Never")
    expect(token_row(page, "forever")).to_contain_text("never expires")


def test_a_wrong_password_for_a_new_token_is_said_so_at_that_field(
    page: Page, person: Person
) -> None:
    tokens = panel(page, "API tokens")
    tokens.get_by_label("Name of a new token").fill("guessed")
    tokens.get_by_label("Your password").fill("not my password")
    tokens.get_by_role("button", name="Create a token").click()
    expect(tokens.get_by_role("alert").filter(has_text="password")).to_have_text(
        "The password is not right."
    )
    expect(tokens.get_by_label("Your password")).to_be_focused()
    expect(page.get_by_text("No tokens yet.")).to_be_visible()


def test_a_new_api_token_is_shown_only_once(page: Page, person: Person) -> None:
    token = create_token(page, "shown once")
    expect(page.get_by_text("it is shown only this once")).to_be_visible()
    page.get_by_role("button", name="I have copied it").click()
    assert token not in everything_on(page)
    open_page(page, "/account")
    expect(panel(page, "API tokens").get_by_role("listitem")).to_contain_text(["shown once"])
    assert token not in everything_on(page)


@pytest.mark.parametrize(
    "context_options", [{"permissions": ["clipboard-read", "clipboard-write"]}], ids=["clipboard"]
)
def test_the_copy_button_puts_the_new_token_on_the_clipboard(page: Page, person: Person) -> None:
    token = create_token(page, "copied")
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_role("button", name="Copied", exact=True)).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token


def test_a_revoked_token_stops_working_at_once(
    page: Page, person: Person, service: Service
) -> None:
    token = create_token(page, "to revoke")
    page.get_by_role("button", name="I have copied it").click()
    page.get_by_role("button", name="Revoke the token to revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("No tokens yet.")).to_be_visible()
    assert bearer(service, token) == 401


def test_after_revoking_the_last_token_the_focus_goes_to_the_name_field(
    page: Page, person: Person
) -> None:
    create_token(page, "only one")
    page.get_by_role("button", name="I have copied it").click()
    page.get_by_role("button", name="Revoke the token only one").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.get_by_label("Name of a new token")).to_be_focused()


def test_a_chat_message_after_the_session_ended_leads_to_logging_in_and_back(
    page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    chat = ChatPage(page).open()
    with httpx.Client(base_url=service.url) as elsewhere:
        elsewhere.post("/api/auth/login", json={"email": person.email, "password": PASSWORD})
        elsewhere.post("/api/auth/logout-everywhere", json={})
    chat.send("hello?")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    fill_login(page, person.email, PASSWORD)
    expect(page.locator("body[data-ready]")).to_be_attached()
    # The server never had it: it waits in the box, to be sent again.
    expect(chat.input).to_have_value("hello?")
    chat.input.press("Enter")
    chat.wait_until_idle()
    expect(chat.content(chat.user_messages.last)).to_have_text("hello?")
