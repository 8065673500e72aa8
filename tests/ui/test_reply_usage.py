"""Each reply says what it used: its prompt and reply tokens, and its cost when its model has a
price (`prices` in GET /api/models); kept with the reply, so a reload shows the same."""

from __future__ import annotations

import time

from playwright.sync_api import Page, Route, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, needs_chromium

pytestmark = needs_chromium

# What the fake upstream's stream reports: 5 prompt tokens, one reply token per word.
WORDS = ["Hello", " there", " friend"]
PRICE = {"input_per_million": 2.5, "output_per_million": 10.0}


def priced(page: Page, prices: dict[str, object]) -> None:
    """GET /api/models as the server answers it, with `prices` added (the upstreams config's)."""

    def add_prices(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "prices": prices})

    page.route("**/api/models", add_prices)


def test_a_reply_shows_its_prompt_and_reply_tokens_and_no_cost_without_prices(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(WORDS, model="fake-large")))
    chat.send("hi")
    usage = chat.last_reply().locator(".usage")
    expect(usage).to_have_text("5 prompt + 3 reply tokens")
    expect(usage.locator(".cost")).to_have_count(0)


def test_a_reply_shows_its_cost_at_its_models_price(page: Page, fake: FakeUpstream) -> None:
    priced(
        page, {"fake-large": PRICE, "other": {"input_per_million": 99, "output_per_million": 99}}
    )
    chat = ChatPage(page).open()
    fake.reply_with(Reply(chunks=completion_chunks(WORDS, model="fake-large")))
    chat.send("hi")
    # 5 x $2.50 + 3 x $10 per million tokens = $0.0000425
    expect(chat.last_reply().locator(".usage")).to_have_text(
        "5 prompt + 3 reply tokens · $0.000043"
    )


def test_a_malformed_price_shows_no_cost(page: Page, fake: FakeUpstream) -> None:
    priced(page, {"fake-large": {"input_per_million": "cheap", "output_per_million": 1}})
    chat = ChatPage(page).open()
    fake.reply_with(Reply(chunks=completion_chunks(WORDS, model="fake-large")))
    chat.send("hi")
    expect(chat.last_reply().locator(".usage")).to_have_text("5 prompt + 3 reply tokens")


def test_a_saved_reply_shows_its_tokens_and_cost_after_a_reload(
    page: Page, fake: FakeUpstream
) -> None:
    priced(page, {"fake-large": PRICE})
    chat = ChatPage(page).open()
    fake.reply_with(Reply(chunks=completion_chunks(WORDS, model="fake-large")))
    chat.send("hi")
    chat.wait_until_idle()
    expect(chat.last_reply().locator(".usage")).to_contain_text("$0.000043")
    chat.reload()
    expect(chat.last_reply().locator(".usage")).to_have_text(
        "5 prompt + 3 reply tokens · $0.000043"
    )


def test_prices_that_arrive_after_the_conversation_is_drawn_add_the_cost(
    page: Page, fake: FakeUpstream
) -> None:
    """The models list is read after the conversation opens: its prices reach replies shown."""
    chat = ChatPage(page).open()
    fake.reply_with(Reply(chunks=completion_chunks(WORDS, model="fake-large")))
    chat.send("hi")
    chat.wait_until_idle()
    held: list[Route] = []
    page.route("**/api/models", lambda route: held.append(route))
    chat.reload()
    expect(chat.last_reply().locator(".usage")).to_have_text("5 prompt + 3 reply tokens")
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)  # lets Playwright deliver the held request to the handler
    assert held, "the page did not ask for the models"
    # The list answers late, with a price: the reply already shown gains its cost.
    held[0].fulfill(
        json={"default": "gpt-4o-mini", "models": ["fake-large"], "prices": {"fake-large": PRICE}}
    )
    expect(chat.last_reply().locator(".usage")).to_have_text(
        "5 prompt + 3 reply tokens · $0.000043"
    )
