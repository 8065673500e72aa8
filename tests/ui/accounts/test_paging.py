"""The admin page lists users 100 at a time. A service of its own, with 120 users put straight
into its database (made through the API, each would cost a password hash)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from quartchat.auth import users
from quartchat.auth.passwords import HASHER
from quartchat.db import Database, database_url

from ...fake_upstream import FakeUpstream
from ...service import Service
from ..browser import needs_chromium
from .conftest import ACCOUNTS_ENV
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, log_in, open_page

pytestmark = needs_chromium

SEEDED = 120  # with the admin: 121 users, two pages and a bit


async def seed(service: Service) -> None:
    db = Database.open(database_url(None, service.data_dir))
    password_hash = HASHER.hash("not used: these users never log in")
    try:
        async with db.write() as connection:
            for n in range(SEEDED):
                await users.create(connection, f"seeded-{n:03}@example.com", password_hash)
    finally:
        await db.close()


@pytest.fixture(scope="module")
def service(fake: FakeUpstream) -> Iterator[Service]:
    env = {**ACCOUNTS_ENV, "ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD}
    with Service(fake.url, **env) as service:
        # In a thread: sync Playwright's event loop may be running in this one.
        seeding = threading.Thread(target=asyncio.run, args=(seed(service),))
        seeding.start()
        seeding.join()
        yield service


@pytest.fixture
def admin_page(page: Page) -> Page:
    log_in(page.context, ADMIN_EMAIL, ADMIN_PASSWORD)
    return open_page(page, "/admin")


def test_the_admin_page_shows_the_first_100_users(admin_page: Page) -> None:
    rows = admin_page.get_by_role("region", name="Users", exact=True).get_by_role("listitem")
    expect(rows).to_have_count(100)
    expect(rows.last).to_contain_text("seeded-098@example.com")


def test_show_more_adds_the_next_users_and_goes_once_all_are_shown(admin_page: Page) -> None:
    rows = admin_page.get_by_role("region", name="Users", exact=True).get_by_role("listitem")
    more = admin_page.get_by_role("button", name="Show more users")
    more.click()
    expect(rows).to_have_count(SEEDED + 1)
    expect(rows.last).to_contain_text(f"seeded-{SEEDED - 1:03}@example.com")
    expect(more).to_be_hidden()


def test_after_show_more_the_focus_is_on_the_first_new_user(admin_page: Page) -> None:
    admin_page.get_by_role("button", name="Show more users").click()
    expect(admin_page.get_by_role("button", name="Disable: seeded-099@example.com")).to_be_focused()
