"""The login page: logging in and out, where it goes afterwards (never to another site), and
signing up where the policy allows it (here: by approval)."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from ...service import Service
from ..browser import needs_chromium
from .people import (
    PASSWORD,
    AdminAPI,
    can_log_in,
    fill_login,
    log_in,
    new_email,
    open_page,
    path_of,
)

pytestmark = needs_chromium


def test_a_page_that_needs_a_login_sends_the_browser_to_log_in_and_then_back(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    page.goto("/account")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert path_of(page) == "/login?next=/account"
    fill_login(page, person.email, PASSWORD)
    expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
    assert path_of(page) == "/account"


def test_logging_in_from_the_login_page_itself_opens_the_chat(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    open_page(page, "/login")
    fill_login(page, person.email, PASSWORD)
    expect(page.locator("body[data-ready][data-default-model]")).to_be_attached()
    assert path_of(page) == "/"


def test_a_wrong_password_shows_the_servers_message_and_logs_nobody_in(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    open_page(page, "/login")
    fill_login(page, person.email, "not the password")
    expect(page.get_by_role("alert")).to_have_text("The email or the password is not right.")
    assert path_of(page) == "/login"
    assert page.request.get("/api/auth/me").status == 401


def test_after_a_wrong_password_the_password_field_has_the_focus(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    open_page(page, "/login")
    fill_login(page, person.email, "not the password")
    expect(page.get_by_role("region", name="Log in").get_by_label("Password")).to_be_focused()


# Each one is a way to name another site in `next`; the last two hide it from a naive check.
OTHER_SITES = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "/\t/evil.example/",
    "javascript:alert(1)",
]


def record_other_sites(page: Page, service: Service) -> list[str]:
    """Requests to anywhere but the service are refused, and listed."""
    elsewhere: list[str] = []

    def handle(route: Route) -> None:
        if route.request.url.startswith(service.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.context.route("**/*", handle)
    return elsewhere


@pytest.mark.parametrize("target", OTHER_SITES)
def test_after_logging_in_the_browser_never_goes_to_another_site(
    page: Page, admin_api: AdminAPI, service: Service, target: str
) -> None:
    person = admin_api.new_user()
    elsewhere = record_other_sites(page, service)
    open_page(page, "/login?next=" + quote(target, safe=""))
    fill_login(page, person.email, PASSWORD)
    expect(page.locator("body[data-ready][data-default-model]")).to_be_attached()
    assert page.url == service.url + "/"
    assert elsewhere == []


@pytest.mark.parametrize("target", OTHER_SITES)
def test_the_pages_own_check_of_next_refuses_another_site(page: Page, target: str) -> None:
    # The server cleans `next` before the page sees it; the page checks it again, on its own.
    open_page(page, "/login")
    checked = page.evaluate(
        "async (t) => (await import('/static/forms.js')).sameSitePath(t)", target
    )
    assert checked == "/"


def test_the_pages_own_check_of_next_keeps_a_path_on_this_site(page: Page) -> None:
    open_page(page, "/login")
    checked = page.evaluate(
        "async (t) => (await import('/static/forms.js')).sameSitePath(t)", "/account?x=1#tokens"
    )
    assert checked == "/account?x=1#tokens"


def test_a_browser_already_logged_in_goes_straight_on_from_the_login_page(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    open_page(page, "/login?next=/account")
    assert path_of(page) == "/account"


def test_log_out_on_the_chat_page_ends_the_session_on_the_server(
    page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    open_page(page, "/")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    # The old cookie, replayed, is worth nothing: the session ended, not just the cookie.
    assert httpx.get(service.url + "/api/auth/me", cookies=cookies).status_code == 401


def test_log_out_on_the_account_page_ends_the_session_on_the_server(
    page: Page, admin_api: AdminAPI, service: Service
) -> None:
    person = admin_api.new_user()
    log_in(page.context, person.email)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    open_page(page, "/account")
    page.get_by_role("banner").get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert httpx.get(service.url + "/api/auth/me", cookies=cookies).status_code == 401


def sign_up_on_the_page(page: Page, email: str, password: str, again: str) -> None:
    open_page(page, "/login")
    page.get_by_role("button", name="Create an account").click()
    form = page.get_by_role("region", name="Create an account")
    form.get_by_label("Email").fill(email)
    form.get_by_label("Password", exact=True).fill(password)
    form.get_by_label("Password again").fill(again)
    form.get_by_role("button", name="Create the account").click()


def test_signing_up_says_the_account_waits_for_approval(page: Page, service: Service) -> None:
    email = new_email("signup")
    sign_up_on_the_page(page, email, PASSWORD, PASSWORD)
    expect(page.get_by_role("heading", name="Almost there")).to_be_visible()
    assert can_log_in(service.url, email, PASSWORD) == 403  # made, and pending


def test_signing_up_with_two_different_passwords_sends_nothing(page: Page) -> None:
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/api/auth/signup" in r.url else None)
    sign_up_on_the_page(page, new_email("signup"), PASSWORD, PASSWORD + "!")
    expect(page.get_by_role("alert")).to_have_text(
        "The two passwords differ: type the same password twice."
    )
    assert sent == []


def test_a_pending_account_is_told_it_waits_for_an_administrator(
    page: Page, service: Service
) -> None:
    email = new_email("pending")
    httpx.post(service.url + "/api/auth/signup", json={"email": email, "password": PASSWORD})
    open_page(page, "/login")
    fill_login(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("An administrator has yet to approve you.")
