"""The admin page's models and limits: a policy set for one user from their row, shown in the
list and the API, edited and removed (in force: tests/usage/test_policies.py)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from ..browser import axe_violations, needs_chromium
from .people import ADMIN_EMAIL, AdminAPI, log_in, open_page
from .test_admin import confirm, user_row

pytestmark = needs_chromium


def test_an_admin_sets_a_users_models_and_limits_and_removes_them(
    page: Page, admin_api: AdminAPI
) -> None:
    person = admin_api.new_user("limited")
    log_in(page.context, ADMIN_EMAIL, "the admin's own password")
    open_page(page, "/admin")
    panel = page.get_by_role("region", name="Models and limits")

    user_row(page, person.email).get_by_role("button", name=f"Limits: {person.email}").click()
    expect(panel.get_by_label("Applies to")).to_be_focused()
    expect(panel.get_by_label("Applies to")).to_have_value(f"user:{person.id}")
    panel.get_by_label("Models allowed").fill("fake-small, gpt-4o-mini")
    panel.get_by_label("Requests per minute").fill("5")
    panel.get_by_label("Cost per month (US dollars)").fill("2.50")
    panel.get_by_role("button", name="Save the policy").click()

    row = panel.get_by_role("listitem").filter(has_text=person.email)
    expect(row).to_contain_text("models: fake-small, gpt-4o-mini")
    expect(row).to_contain_text("5 requests per minute")
    expect(row).to_contain_text("$2.50 per month")
    saved = admin_api.call("GET", "/api/admin/policies")["policies"]
    assert {
        "subject": f"user:{person.id}",
        "models": ["fake-small", "gpt-4o-mini"],
        "requests_per_minute": 5,
        "tokens_per_day": None,
        "cost_per_month": 2.5,
    } in saved
    assert axe_violations(page) == []

    panel.get_by_label("Requests per minute").fill("")
    page.get_by_role("button", name=f"Edit the policy of {person.email}").click()
    expect(panel.get_by_label("Requests per minute")).to_have_value("5")

    row.get_by_role("button", name=re.compile("Remove")).click()
    confirm(page, "Remove")
    expect(row).to_have_count(0)
    subjects = [p["subject"] for p in admin_api.call("GET", "/api/admin/policies")["policies"]]
    assert f"user:{person.id}" not in subjects
