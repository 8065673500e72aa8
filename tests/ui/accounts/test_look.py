"""Every account page, in light and dark, and on a phone: axe-core finds no serious or critical
violation, the theme follows the system, nothing is wider than a phone, no input makes iOS zoom.
Screenshots go to artifacts/screenshots/ (`<view>-light.png`, `-dark.png`, `-phone.png`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest
from playwright.sync_api import Page, expect

from ..browser import SCREENSHOTS, axe_violations, background, needs_chromium
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, AdminAPI, log_in, new_email, open_page

pytestmark = needs_chromium


def login(page: Page, api: AdminAPI) -> None:
    open_page(page, "/login")


def signup(page: Page, api: AdminAPI) -> None:
    open_page(page, "/login")
    page.get_by_role("button", name="Create an account").click()
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()


def login_error(page: Page, api: AdminAPI) -> None:
    open_page(page, "/login")
    page.get_by_label("Email").first.fill(new_email("nobody"))
    page.get_by_label("Password", exact=True).first.fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()


def invite(page: Page, api: AdminAPI) -> None:
    open_page(page, "/invite?token=" + api.invite(new_email("invited")))


def account(page: Page, api: AdminAPI) -> None:
    person = api.new_user("reader")
    log_in(page.context, person.email)
    open_page(page, "/account")
    page.get_by_label("Name of a new token").fill("laptop script")
    page.get_by_role("button", name="Create a token").click()
    expect(page.get_by_role("region", name="Your new token")).to_be_visible()


def admin(page: Page, api: AdminAPI) -> None:
    api.new_user("listed")
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    open_page(page, "/admin")
    page.get_by_role("region", name="Invites", exact=True).get_by_label("Email").fill(
        new_email("invited")
    )
    page.get_by_role("button", name="Make an invite link").click()
    expect(page.get_by_role("region", name="The invite link")).to_be_visible()


def forbidden(page: Page, api: AdminAPI) -> None:
    log_in(page.context, api.new_user().email)
    page.goto("/admin")
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def chat(page: Page, api: AdminAPI) -> None:
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    open_page(page, "/")


VIEWS: dict[str, Callable[[Page, AdminAPI], None]] = {
    f.__name__: f for f in (login, signup, login_error, invite, account, admin, forbidden, chat)
}
DARK_BACKGROUND = "rgb(33, 33, 33)"


def screenshot(page: Page, name: str) -> None:
    """The whole page, not only what fits the window: the account pages are long."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("view", list(VIEWS))
def test_each_view_follows_the_theme_and_has_no_serious_accessibility_violations(
    page: Page, admin_api: AdminAPI, view: str, scheme: Literal["light", "dark"]
) -> None:
    page.emulate_media(color_scheme=scheme)
    VIEWS[view](page, admin_api)
    assert (background(page) == DARK_BACKGROUND) == (scheme == "dark")
    screenshot(page, f"{view}-{scheme}")
    assert axe_violations(page) == []


phone_size = pytest.mark.parametrize(
    "context_options",
    [
        {
            "viewport": {"width": 360, "height": 740},
            "device_scale_factor": 2,
            "reduced_motion": "reduce",
            "has_touch": True,
        }
    ],
    ids=["phone"],
)


@phone_size
@pytest.mark.parametrize("view", [v for v in VIEWS if v != "chat"])
def test_each_view_fits_a_360px_phone_without_zooming_inputs(
    page: Page, admin_api: AdminAPI, view: str
) -> None:
    VIEWS[view](page, admin_api)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    smallest = page.evaluate(
        "Math.min(...[...document.querySelectorAll('input:not([hidden]), select')]"
        ".map(e => parseFloat(getComputedStyle(e).fontSize)))"
    )
    assert smallest >= 16
    screenshot(page, f"{view}-phone")
    assert axe_violations(page) == []


@phone_size
def test_the_account_links_are_in_the_chat_pages_drawer_on_a_phone(
    page: Page, admin_api: AdminAPI
) -> None:
    chat(page, admin_api)
    account_link = page.get_by_role("link", name="Account")
    expect(account_link).to_be_hidden()
    page.get_by_role("button", name="Conversations").click()
    expect(account_link).to_be_visible()
    screenshot(page, "chat-account-phone")
    assert axe_violations(page) == []


def test_the_login_form_works_from_the_keyboard_alone(page: Page, admin_api: AdminAPI) -> None:
    person = admin_api.new_user()
    open_page(page, "/login")
    page.keyboard.type(person.email)  # the email field has the focus from the start
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")
    expect(page.locator("body[data-ready][data-default-model]")).to_be_attached()
