"""With prices in the upstreams config, a reply shows what it cost, and My usage shows the
ledger's cost of the same requests: the page's sum at the listed price and the ledger's agree.
A service of its own (UPSTREAMS_FILE with a price), so the other account tests see no prices."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ...fake_upstream import FakeUpstream, Reply, completion_chunks
from ...service import Service
from ..browser import ChatPage, needs_chromium
from .conftest import ACCOUNTS_ENV
from .people import ADMIN_EMAIL, ADMIN_PASSWORD, AdminAPI, log_in, open_page
from .test_usage import fact, my_usage, wait_for_usage

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def service(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    upstreams: Path = tmp_path_factory.mktemp("upstreams") / "upstreams.toml"
    upstreams.write_text(
        f"""[[upstreams]]
name = "default"
base_url = "{fake.url}"
prices = {{ "gpt-4o-mini" = {{ input = 2, output = 10 }} }}
"""
    )
    env = {
        **ACCOUNTS_ENV,
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "UPSTREAMS_FILE": str(upstreams),
        "USAGE_FLUSH_SECONDS": "0.1",
    }
    with Service(fake.url, **env) as service:
        yield service


def test_a_replys_cost_and_my_months_cost_agree_at_the_models_price(
    service: Service, page: Page, fake: FakeUpstream
) -> None:
    admin = AdminAPI(service.url)
    person = admin.new_user("payer")
    admin.close()
    log_in(page.context, person.email)
    chat = ChatPage(page).open()
    # The upstream answers as OpenAI does, naming the dated snapshot of the model asked for.
    fake.reply_with(
        Reply(chunks=completion_chunks(["One", " two", " three"], model="gpt-4o-mini-2024-07-18"))
    )
    chat.send("what does this cost?")
    # 5 x $2 + 3 x $10 per million tokens = $0.00004 (whole millionths: the ledger keeps those)
    expect(chat.last_reply().locator(".usage")).to_have_text("5 prompt + 3 reply tokens · $0.00004")
    month = datetime.now(UTC).strftime("%Y-%m")
    wait_for_usage(page.context, f"/api/usage?month={month}", lambda u: u["total"]["requests"] >= 1)
    open_page(page, "/account")
    expect(fact(my_usage(page), "Cost")).to_have_text("$0.00004")
