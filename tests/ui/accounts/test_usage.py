"""The usage views, from real usage: people chat with the fake upstream, the ledger records it
(flushed every USAGE_FLUSH_SECONDS, small in these tests' service), and the pages show it. A
reply's tokens read back from the server; "My usage" on the account page (this month's totals,
by day in a chart, by model, month to month); the admin's Usage (by user, model and day, the CSV).
Each test makes its own people, so the numbers of their rows are known whatever else the shared
service has recorded."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from ...fake_upstream import FakeUpstream, Reply, completion_chunks
from ..browser import SCREENSHOTS, TOUCH_PHONE, ChatPage, axe_violations, needs_chromium
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, AdminAPI, Person, log_in, open_page

pytestmark = needs_chromium

# The fake's stream says 5 prompt tokens and one reply token per word.
THREE = ["One", " two", " three"]
ONE = ["Four"]


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def today() -> datetime:
    return datetime.now(UTC)


def chat(page: Page, fake: FakeUpstream, *replies: list[str]) -> None:
    """Ask one question per reply (in a new chat each time), each answered with those words."""
    chat = ChatPage(page).open()
    for i, words in enumerate(replies):
        fake.reply_with(Reply(chunks=completion_chunks(words)))
        chat.send(f"question {i}")
        expect(chat.content(chat.last_reply())).to_have_text("".join(words))
        chat.wait_until_idle()


def wait_for_usage(
    context: BrowserContext, path: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The usage API's answer once `done` says the ledger has flushed what the test made."""
    deadline = time.monotonic() + 20
    while True:
        answer: dict[str, Any] = context.request.get(path).json()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)  # polling the ledger's flush, with the deadline above


def my_usage(page: Page) -> Locator:
    return page.get_by_role("region", name="My usage", exact=True)


def admin_usage(page: Page) -> Locator:
    return page.get_by_role("region", name="Usage", exact=True)


def fact(region: Locator, name: str) -> Locator:
    """The value of one of the totals (a <dd> after its <dt>)."""
    return (
        region.locator(".usage-totals div")
        .filter(has=region.page.get_by_text(name, exact=True))
        .locator("dd")
    )


def row(region: Locator, name: str) -> Locator:
    return region.get_by_role("row").filter(
        has=region.page.get_by_role("rowheader", name=name, exact=True)
    )


@pytest.fixture
def spender(admin_api: AdminAPI, page: Page, fake: FakeUpstream) -> Person:
    """Someone who asked two questions this month: 10 prompt and 4 reply tokens, recorded."""
    person = admin_api.new_user("spender")
    log_in(page.context, person.email)
    chat(page, fake, THREE, ONE)
    wait_for_usage(
        page.context, f"/api/usage?month={this_month()}", lambda u: u["total"]["requests"] >= 2
    )
    return person


def test_a_replys_tokens_are_read_back_from_the_server(
    admin_api: AdminAPI, page: Page, fake: FakeUpstream
) -> None:
    log_in(page.context, admin_api.new_user("reader").email)
    chat(page, fake, THREE)
    ChatPage(page).reload()
    expect(ChatPage(page).last_reply().locator(".usage")).to_have_text("5 prompt + 3 reply tokens")


def test_my_usage_shows_this_months_totals_by_day_and_by_model(spender: Person, page: Page) -> None:
    open_page(page, "/account")
    usage = my_usage(page)
    month = datetime.now(UTC).strftime("%B %Y")
    expect(usage.locator("#usage-month")).to_have_text(month)
    expect(fact(usage, "Requests")).to_have_text("2")
    expect(fact(usage, "Tokens")).to_have_text("14 (10 prompt + 4 reply)")
    expect(fact(usage, "Cost")).to_have_text("No price set")
    # The chart: one day with use, its two stacked bars, and a sentence that sums it up.
    chart = usage.get_by_role("img", name=f"Tokens by day, {month}")
    expect(chart).to_have_accessible_name(
        f"Tokens by day, {month}. In all 14; the most, 14, for {today():%b} {today().day}."
    )
    expect(chart.locator(".chart-bar")).to_have_count(2)
    usage.get_by_text("Show the numbers").click()
    expect(row(usage, f"{today():%b} {today().day}").get_by_role("cell")).to_have_text(
        ["10", "4", "14"]
    )
    by_model = usage.get_by_role("region", name=f"By model, {month}")
    expect(by_model.get_by_role("row")).to_have_count(2)  # the header and one model
    expect(by_model.get_by_role("row").nth(1).get_by_role("cell")).to_have_text(
        ["2", "0", "10", "4", "—"]
    )


def test_my_usage_goes_month_to_month_and_the_address_keeps_the_month(
    spender: Person, page: Page
) -> None:
    open_page(page, "/account")
    usage = my_usage(page)
    next_month = usage.get_by_role("button", name="Next month")
    expect(next_month).to_be_disabled()  # nothing is recorded in the future
    usage.get_by_role("button", name="Previous month").click()
    first = today().replace(day=1)
    before = (
        first.replace(year=first.year - 1, month=12)
        if first.month == 1
        else first.replace(month=first.month - 1)
    )
    expect(usage.locator("#usage-month")).to_have_text(before.strftime("%B %Y"))
    expect(usage).to_contain_text(f"No use in {before:%B %Y}.")
    expect(page).to_have_url(f"{page.url.split('?')[0]}?month={before:%Y-%m}")
    page.reload()
    expect(usage.locator("#usage-month")).to_have_text(before.strftime("%B %Y"))
    next_month.click()
    expect(fact(usage, "Requests")).to_have_text("2")
    expect(next_month).to_be_disabled()
    expect(usage.get_by_role("button", name="Previous month")).to_be_focused()


def test_the_admin_sees_usage_by_user_model_and_day_and_downloads_it(
    spender: Person, browser_admin: Page
) -> None:
    page = browser_admin
    usage = admin_usage(page)
    # By user (the first view): the spender's row.
    expect(row(usage, spender.email).get_by_role("cell")).to_have_text(["2", "0", "10", "4", "—"])
    expect(usage.get_by_role("img", name="Tokens by user", exact=False)).to_be_visible()
    csv_link = usage.get_by_role("link", name="Download as CSV")
    href = csv_link.get_attribute("href") or ""
    assert "format=csv" in href and "group=user" in href
    response = page.context.request.get(href)
    assert response.ok
    rows = list(csv.reader(io.StringIO(response.text())))
    assert any(spender.email in line for line in rows)
    # By day: today's row, with everyone's use today (the spender's at least).
    usage.get_by_label("By", exact=True).select_option("day")
    usage.get_by_role("button", name="Show").click()
    expect(usage.get_by_role("img", name="Tokens by day", exact=False)).to_be_visible()
    expect(row(usage, today().strftime("%b %-d, %Y"))).to_be_visible()
    expect(csv_link).to_have_attribute("href", href.replace("group=user", "group=day"))
    # By model.
    usage.get_by_label("By", exact=True).select_option("model")
    usage.get_by_role("button", name="Show").click()
    expect(usage.get_by_role("img", name="Tokens by model", exact=False)).to_be_visible()


def test_the_admin_is_told_when_the_range_ends_before_it_begins(browser_admin: Page) -> None:
    usage = admin_usage(browser_admin)
    usage.get_by_label("From", exact=True).fill("2026-05-10")
    usage.get_by_label("To", exact=True).fill("2026-05-01")
    usage.get_by_role("button", name="Show").click()
    expect(usage.get_by_role("alert")).to_have_text("“To” must be on or after “From”.")
    expect(usage.get_by_label("To", exact=True)).to_be_focused()


@pytest.fixture
def browser_admin(page: Page) -> Page:
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    open_page(page, "/admin")
    expect(admin_usage(page).locator(".usage-report")).not_to_have_attribute("aria-busy", "true")
    return page


@pytest.mark.parametrize("look", ["light", "dark", "phone"])
def test_the_usage_views_pass_axe_and_fit_a_phone(spender: Person, page: Page, look: str) -> None:
    page.emulate_media(color_scheme="dark" if look == "dark" else "light")
    if look == "phone":
        page.set_viewport_size(TOUCH_PHONE["viewport"])
    for email, password, path, name in [
        (spender.email, spender.password, "/account", "My usage"),
        (ADMIN_EMAIL, ADMIN_PASSWORD, "/admin", "Usage"),
    ]:
        log_in(page.context, email, password)
        open_page(page, path)
        section = page.get_by_role("region", name=name, exact=True)
        expect(section.locator(".chart-bar").first).to_be_visible()
        if path == "/account":
            section.get_by_text("Show the numbers").click()
        assert axe_violations(page) == []
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= page.viewport_size["width"]  # type: ignore[index]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        section.screenshot(path=SCREENSHOTS / f"usage-{path[1:]}-{look}.png")
