"""The page as a whole: security headers, accessibility (axe-core), themes, phone width,
keyboard use, screen-reader announcements; screenshots of the main views as artifacts."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from ..fake_upstream import FakeUpstream, Reply
from ..service import Service
from .browser import (
    ChatPage,
    axe_violations,
    background,
    conversation,
    needs_chromium,
    screenshot,
)

pytestmark = needs_chromium

SHOWCASE = conversation(
    "Reverse a list in Python",
    [
        ("How do I reverse a list in Python?", ""),
    ],
    cid="showcase",
)
SHOWCASE["messages"][1]["content"] = """Three common ways:

1. **In place**: `items.reverse()`
2. **A reversed copy**: `items[::-1]`
3. **An iterator**: `reversed(items)`

```python
def reversed_copy(items):
    return items[::-1]  # a new list

items = [1, 2, 3]
items.reverse()  # now [3, 2, 1]
```

| way | copies? |
|-----|---------|
| `reverse()` | no |
| `[::-1]` | yes |

See [the docs](https://docs.python.org/3/tutorial/datastructures.html)."""
SHOWCASE["messages"][1]["usage"] = {
    "prompt_tokens": 14,
    "completion_tokens": 80,
    "total_tokens": 94,
}
SHOWCASE["messages"][1]["model"] = "gpt-4o-mini"


def show_showcase(chat: ChatPage) -> None:
    chat.seed(SHOWCASE)
    chat.open("/#showcase")
    chat.reload()  # a fresh start, which lists the seeded conversation in the sidebar
    expect(chat.messages).to_have_count(2)
    expect(chat.content(chat.last_reply()).locator(".hljs-keyword").first).to_be_visible()


def test_page_has_a_strict_csp_and_security_headers(service: Service) -> None:
    response = httpx.get(service.url + "/")
    csp = response.headers["Content-Security-Policy"]
    for directive in (
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    html = response.text
    assert "<script>" not in html and " style=" not in html  # nothing the CSP would block


def test_every_vendored_library_loads_under_the_csp(chat: ChatPage) -> None:
    # The page fixture fails on CSP violations and console errors; a rendered, highlighted
    # code block proves marked, DOMPurify and highlight.js all loaded.
    show_showcase(chat)
    expect(chat.content(chat.last_reply()).locator("table")).to_be_visible()


def test_main_view_light_has_no_serious_accessibility_violations(chat: ChatPage) -> None:
    show_showcase(chat)
    screenshot(chat.page, "light")
    assert axe_violations(chat.page) == []


def test_empty_chat_has_no_serious_accessibility_violations(chat: ChatPage) -> None:
    screenshot(chat.page, "empty")
    assert axe_violations(chat.page) == []


def test_settings_panel_has_no_serious_accessibility_violations(chat: ChatPage) -> None:
    chat.page.get_by_role("button", name="Settings").click()
    expect(chat.page.get_by_role("dialog", name="Chat settings")).to_be_visible()
    screenshot(chat.page, "settings")
    assert axe_violations(chat.page) == []


def test_an_error_reply_has_no_serious_accessibility_violations(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(status=500, chunks=[b'{"error": {"message": "boom"}}'], headers={}))
    chat.send("fail please")
    expect(chat.page.get_by_role("button", name="Retry")).to_be_visible()
    screenshot(chat.page, "error")
    assert axe_violations(chat.page) == []


# The browser context asks for the dark scheme, like a system set to dark.
dark_system = pytest.mark.parametrize("context_options", [{"color_scheme": "dark"}], ids=["dark"])
phone_size = pytest.mark.parametrize(
    "context_options",
    # Reduced motion: the drawer then opens without a transition to catch mid-way on screenshots.
    [
        {
            "viewport": {"width": 360, "height": 740},
            "device_scale_factor": 2,
            "reduced_motion": "reduce",
        }
    ],
    ids=["phone"],
)


@dark_system
def test_dark_theme_follows_the_system_and_is_accessible(chat: ChatPage) -> None:
    dark_page = chat.page
    show_showcase(chat)
    assert background(dark_page) == "rgb(33, 33, 33)"
    screenshot(dark_page, "dark")
    assert axe_violations(dark_page) == []


@dark_system
def test_the_theme_can_be_switched_and_the_choice_survives_a_reload(chat: ChatPage) -> None:
    dark_page = chat.page
    toggle = dark_page.get_by_role("button", name="Theme")
    expect(toggle).to_have_text("Theme: System")
    toggle.click()
    expect(toggle).to_have_text("Theme: Light")
    assert background(dark_page) == "rgb(255, 255, 255)"
    chat.reload()
    assert background(dark_page) == "rgb(255, 255, 255)"
    dark_page.get_by_role("button", name="Theme").click()
    expect(toggle).to_have_text("Theme: Dark")
    assert background(dark_page) == "rgb(33, 33, 33)"


@phone_size
def test_a_360px_phone_gets_the_whole_page_without_zooming_inputs(chat: ChatPage) -> None:
    phone = chat.page
    show_showcase(chat)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    sidebar_link = chat.conversation_link("Reverse a list in Python")
    expect(sidebar_link).to_be_hidden()  # the sidebar is a drawer here
    screenshot(phone, "phone")
    assert axe_violations(phone) == []
    phone.get_by_role("button", name="Conversations").click()
    expect(sidebar_link).to_be_visible()
    for label in ("Search conversations",):
        assert (
            phone.get_by_label(label).evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            >= 16
        )
    screenshot(phone, "phone-sidebar")
    phone.get_by_role("button", name="New Chat").click()
    expect(sidebar_link).to_be_hidden()
    assert chat.input.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 16
    model = phone.get_by_label("Model", exact=True)
    assert model.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") >= 16
    phone.get_by_role("button", name="Settings").click()
    for label in ("System prompt", "Temperature", "Top P", "Max tokens"):
        assert (
            phone.get_by_label(label).evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            >= 16
        )
    phone.context.close()


def test_every_control_is_reachable_by_keyboard(chat: ChatPage) -> None:
    show_showcase(chat)
    names: set[str] = set()
    for _ in range(40):
        chat.page.keyboard.press("Tab")
        names.add(
            chat.page.evaluate(
                "(() => { const e = document.activeElement;"
                " return (e.getAttribute('aria-label') || e.labels?.[0]?.textContent"
                " || e.textContent || '').trim().replace(/\\s+/g, ' '); })()"
            )
        )
    for name in (
        "New Chat",
        "Search conversations",
        "Reverse a list in Python",
        "Theme: System",
        "Model",
        "Settings",
        "Copy message",
        "Edit message",
        "Copy code",
        "Regenerate reply",
        "Message",
        "Send",
    ):
        assert name in names


def test_keyboard_shortcuts(chat: ChatPage) -> None:
    chat.page.keyboard.press("Control+k")
    expect(chat.page.get_by_label("Search conversations")).to_be_focused()
    chat.page.keyboard.press("Shift+Escape")
    expect(chat.input).to_be_focused()
    chat.send("first chat")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: first chat")
    chat.page.keyboard.press("Control+Shift+O")
    expect(chat.messages).to_have_count(0)
    expect(chat.input).to_be_focused()


def test_a_finished_reply_is_announced_politely_and_briefly(chat: ChatPage) -> None:
    announcer = chat.page.locator("#announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    chat.send("announce me")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: announce me")
    # A short word that it is over, not the reply (thousands of characters, read in one go).
    expect(announcer).to_have_text("Reply finished.")
    # The growing reply itself is not a live region, so readers are not flooded token by token.
    assert chat.page.locator("#messages [aria-live]").count() == 0


def test_the_api_docs_page_renders_the_description_under_the_strict_csp(page: Page) -> None:
    response = page.goto("/docs")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.get_by_role("heading", name="quartchat")).to_be_visible()
    for path in ("/api/chat/stream", "/api/chat", "/api/models", "/health"):
        expect(page.get_by_text(path, exact=True)).to_be_visible()
    page.get_by_text("/api/chat/stream", exact=True).click()
    expect(page.get_by_text("text/event-stream").first).to_be_visible()
