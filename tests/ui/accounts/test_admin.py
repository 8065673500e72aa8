"""The admin page's users: add, approve, disable and enable, change the role, reset the
password, see and revoke their API tokens; and who may open the page at all."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import orjson
import pytest
from playwright.sync_api import Locator, Page, expect

from ...fake_upstream import FakeUpstream, Reply
from ...service import Service
from ..browser import needs_chromium
from .people import (
    ADMIN_EMAIL,
    PASSWORD,
    AdminAPI,
    Person,
    can_log_in,
    fill_login,
    log_in,
    new_email,
    open_page,
    path_of,
)

pytestmark = needs_chromium


@pytest.fixture
def admin_page(page: Page) -> Page:
    """The test's browser, logged in as the admin, on the admin page."""
    log_in(page.context, ADMIN_EMAIL, "the admin's own password")
    return open_page(page, "/admin")


def user_row(page: Page, email: str) -> Locator:
    users = page.get_by_role("region", name="Users", exact=True)
    return users.get_by_role("listitem").filter(has_text=email)


def confirm(page: Page, action: str) -> None:
    page.get_by_role("dialog").get_by_role("button", name=action, exact=True).click()


def test_a_user_who_is_not_an_admin_gets_a_403_page(page: Page, admin_api: AdminAPI) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    response = page.goto("/admin")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Only administrators can open this page"
    )


def test_an_admin_adds_a_user_who_can_then_log_in(admin_page: Page, service: Service) -> None:
    email = new_email("added")
    form = admin_page.get_by_role("region", name="Users", exact=True)
    form.get_by_label("Email").fill(email)
    form.get_by_label("First password").fill(PASSWORD)
    form.get_by_role("button", name="Add the user").click()
    expect(user_row(admin_page, email)).to_be_visible()
    assert can_log_in(service.url, email, PASSWORD) == 200


def test_adding_a_user_whose_email_is_taken_shows_the_servers_message(
    admin_page: Page, admin_api: AdminAPI
) -> None:
    taken = admin_api.new_user()
    form = admin_page.get_by_role("region", name="Users", exact=True)
    form.get_by_label("Email").fill(taken.email)
    form.get_by_label("First password").fill(PASSWORD)
    form.get_by_role("button", name="Add the user").click()
    expect(form.get_by_role("alert").filter(has_text="There")).to_have_text(
        "There is an account with this email already."
    )
    expect(form.get_by_label("Email")).to_be_focused()


def test_a_disabled_user_is_logged_out_at_their_next_action(
    admin_page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    person = admin_api.new_user()
    theirs = other_browser()
    log_in(theirs.context, person.email)
    open_page(theirs, "/account")
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Disable").click()
    confirm(admin_page, "Disable")
    expect(user_row(admin_page, person.email)).to_contain_text("disabled")
    theirs.get_by_label("Name of a new token").fill("after being disabled")
    theirs.get_by_role("button", name="Create a token").click()
    expect(theirs.get_by_role("heading", name="Log in")).to_be_visible()
    assert path_of(theirs) == "/login?next=/account"


def test_a_disabled_user_is_told_so_when_logging_in(page: Page, admin_api: AdminAPI) -> None:
    person = admin_api.new_user()
    admin_api.call("PATCH", f"/api/admin/users/{person.id}", status="disabled")
    open_page(page, "/login")
    fill_login(page, person.email, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("This account was disabled.")


def test_enabling_a_disabled_user_lets_them_log_in_again(
    admin_page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    admin_api.call("PATCH", f"/api/admin/users/{person.id}", status="disabled")
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Enable").click()
    expect(user_row(admin_page, person.email).get_by_role("button", name="Disable")).to_be_visible()
    assert can_log_in(service.url, person.email, PASSWORD) == 200


def test_a_changed_row_keeps_the_focus_in_the_same_place(
    admin_page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Make admin").click()
    # The row is drawn again: the button that replaced the one pressed has the focus.
    expect(
        user_row(admin_page, person.email).get_by_role("button", name="Make user")
    ).to_be_focused()


def test_approving_a_pending_user_lets_them_log_in(admin_page: Page, service: Service) -> None:
    email = new_email("waiting")
    httpx.post(service.url + "/api/auth/signup", json={"email": email, "password": PASSWORD})
    admin_page.reload()
    row = user_row(admin_page, email)
    expect(row).to_contain_text("waiting for approval")
    row.get_by_role("button", name="Approve").click()
    expect(row.get_by_role("button", name="Disable")).to_be_visible()
    assert can_log_in(service.url, email, PASSWORD) == 200


def test_making_a_user_an_admin_opens_the_admin_page_to_them(
    admin_page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    person = admin_api.new_user()
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Make admin").click()
    expect(
        user_row(admin_page, person.email).get_by_role("button", name="Make user")
    ).to_be_visible()
    theirs = other_browser()
    log_in(theirs.context, person.email)
    response = theirs.goto("/admin")
    assert response is not None and response.status == 200


def test_making_an_admin_a_user_closes_the_admin_page_to_them(
    admin_page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user(role="admin")
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Make user").click()
    expect(
        user_row(admin_page, person.email).get_by_role("button", name="Make admin")
    ).to_be_visible()
    assert admin_api.user(person)["role"] == "user"


def reset_password(page: Page, person: Person, new: str) -> None:
    user_row(page, person.email).get_by_role("button", name="Reset password").click()
    dialog = page.get_by_role("dialog", name="Reset the password")
    dialog.get_by_label("New password").fill(new)
    dialog.get_by_role("button", name="Reset the password").click()
    expect(dialog).to_be_hidden()


def test_a_reset_password_replaces_the_old_one(
    admin_page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    admin_page.reload()
    reset_password(admin_page, person, "a password from the admin")
    assert can_log_in(service.url, person.email, PASSWORD) == 401
    assert can_log_in(service.url, person.email, "a password from the admin") == 200


def test_a_reset_password_logs_the_user_out(
    admin_page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    person = admin_api.new_user()
    theirs = other_browser()
    log_in(theirs.context, person.email)
    admin_page.reload()
    reset_password(admin_page, person, "a password from the admin")
    theirs.goto("/account")
    expect(theirs.get_by_role("heading", name="Log in")).to_be_visible()


def their_token(service: Service, person: Person, name: str) -> str:
    """An API token the person makes for themselves, just after logging in (no password asked)."""
    with httpx.Client(base_url=service.url) as theirs:
        theirs.post("/api/auth/login", json={"email": person.email, "password": PASSWORD})
        return str(theirs.post("/api/auth/tokens", json={"name": name}).json()["token"])


def bearer(service: Service, token: str) -> int:
    response = httpx.get(service.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def test_a_reset_password_revokes_the_user_s_api_tokens(
    admin_page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    token = their_token(service, person, "their script")
    admin_page.reload()
    reset_password(admin_page, person, "a password from the admin")
    assert bearer(service, token) == 401


def test_an_admin_revokes_one_of_a_user_s_api_tokens(
    admin_page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    stolen = their_token(service, person, "stolen laptop")
    kept = their_token(service, person, "build server")
    assert bearer(service, stolen) == 200  # used: the list says when
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="API tokens").click()
    dialog = admin_page.get_by_role("dialog", name="API tokens")
    rows = dialog.get_by_role("listitem")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="stolen laptop")).not_to_contain_text("last used never")
    expect(rows.filter(has_text="build server")).to_contain_text("last used never")
    expect(rows.filter(has_text="build server")).to_contain_text("expires")
    dialog.get_by_role("button", name="Revoke the token stolen laptop").click()
    admin_page.get_by_role("dialog", name=re.compile("^Revoke")).get_by_role(
        "button", name="Revoke", exact=True
    ).click()
    expect(rows).to_have_count(1)
    assert (bearer(service, stolen), bearer(service, kept)) == (401, 200)
    dialog.get_by_role("button", name="Close").click()
    expect(
        user_row(admin_page, person.email).get_by_role("button", name="API tokens")
    ).to_be_focused()


def test_a_too_short_reset_password_is_refused_in_the_dialog(
    admin_page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    admin_page.reload()
    user_row(admin_page, person.email).get_by_role("button", name="Reset password").click()
    dialog = admin_page.get_by_role("dialog", name="Reset the password")
    dialog.get_by_label("New password").fill("short")
    dialog.get_by_role("button", name="Reset the password").click()
    expect(dialog.get_by_role("alert")).to_have_text("“New password” needs at least 8 characters.")
    expect(dialog).to_be_visible()


def test_the_admin_cannot_disable_or_demote_their_own_account_here(admin_page: Page) -> None:
    mine = user_row(admin_page, ADMIN_EMAIL)
    expect(mine).to_contain_text("you")
    expect(mine.get_by_role("button")).to_have_text(["Reset password", "API tokens", "Limits"])


def test_the_admin_page_shows_the_default_model_and_the_providers_last_refusal_of_the_key(
    page: Page, admin_api: AdminAPI, fake: FakeUpstream
) -> None:
    words = "Incorrect API key provided. You can find your API key at https://platform.openai.com."
    body = orjson.dumps({"error": {"message": words}})
    fake.reply_with(Reply(401, [body], {"Content-Type": "application/json"}))
    refused = admin_api.http.post(
        "/api/chat/stream", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert refused.json()["error"]["code"] == "UPSTREAM_AUTH"
    assert "platform.openai.com" not in refused.text
    log_in(page.context, ADMIN_EMAIL, "the admin's own password")
    provider = open_page(page, "/admin").get_by_role("region", name="Model provider")
    expect(provider).to_contain_text("gpt-4o-mini (set by OPENAI_MODEL)")
    expect(provider).to_contain_text(f"401: {words}")
    # Each upstream on a line of its own, the default named so.
    expect(provider.get_by_role("definition").filter(has_text="(the default)")).to_have_count(1)
