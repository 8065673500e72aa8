"""Accessibility of the page at scale: focus rings drawn whole, the message box inside a landmark,
finger-sized targets on a phone, an Undo toast that waits for the reader; axe-core on the new
views (the shortcuts panel, formulas, a rate-limited error, a settings problem), light, dark and
phone, with their screenshots as artifacts."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from ..fake_upstream import FakeUpstream, Reply
from .browser import (
    TOUCH_PHONE,
    ChatPage,
    axe_violations,
    conversation,
    needs_chromium,
    press_outside_fields,
    screenshot,
)
from .test_page import show_showcase

pytestmark = needs_chromium

PHONE: dict[str, Any] = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
    "reduced_motion": "reduce",
}
views = pytest.mark.parametrize(
    "context_options",
    [{"color_scheme": "light"}, {"color_scheme": "dark"}, PHONE],
    ids=["light", "dark", "phone"],
)

# Where the focused element's ring (outline-offset + outline-width around its box) is cut off by
# an ancestor that clips what it paints (overflow, paint containment, content-visibility), or
# null. The scrolling page areas are left out: the element is scrolled into view first.
CLIPPED_RING = """(el) => {
  const style = getComputedStyle(el);
  if (style.outlineStyle === 'none' || parseFloat(style.outlineWidth) === 0) return 'no ring';
  const out = parseFloat(style.outlineOffset) + parseFloat(style.outlineWidth);
  const box = el.getBoundingClientRect();
  const ring = {left: box.left - out, top: box.top - out, right: box.right + out, bottom: box.bottom + out};
  for (let a = el.parentElement; a && a.id !== 'scroller'; a = a.parentElement) {
    const s = getComputedStyle(a);
    const clips = s.overflowX !== 'visible' || s.overflowY !== 'visible'
      || /paint|strict|content/.test(s.contain) || s.contentVisibility === 'auto';
    if (!clips) continue;
    const b = a.getBoundingClientRect();
    const left = b.left + a.clientLeft, top = b.top + a.clientTop;
    if (ring.left < left - 0.5 || ring.top < top - 0.5
        || ring.right > left + a.clientWidth + 0.5 || ring.bottom > top + a.clientHeight + 0.5) {
      return `${el.tagName}.${el.className} ${el.textContent.trim().slice(0, 20)} cut by ${a.tagName}.${a.className}`;
    }
  }
  return null;
}"""

# Every visible control's size, except links inside the text of a message (inline targets are
# exempt from the 44 px rule) and what is hidden until focused.
TARGETS = """() => [...document.querySelectorAll('button, a[href], input, select, textarea, [role=button]')]
  .filter((e) => e.checkVisibility() && !e.closest('.visually-hidden, .markdown p, .markdown li, .markdown td, dialog:not([open])'))
  .map((e) => { const r = e.getBoundingClientRect();
                return {name: (e.getAttribute('aria-label') || e.title || e.textContent || e.id).trim().slice(0, 40),
                        width: Math.round(r.width), height: Math.round(r.height),
                        onScreen: r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth}; })
  .filter((t) => t.onScreen)"""


def small_targets(page: Page) -> list[dict[str, Any]]:
    return [t for t in page.evaluate(TARGETS) if t["width"] < 44 or t["height"] < 44]


def test_focus_rings_in_messages_and_code_blocks_are_not_cut_off(chat: ChatPage) -> None:
    show_showcase(chat)
    checked: set[str] = set()
    chat.input.focus()
    for _ in range(25):
        chat.page.keyboard.press("Shift+Tab")
        focused = chat.page.evaluate_handle("document.activeElement").as_element()
        if not focused or not focused.evaluate("e => !!e.closest('#messages')"):
            continue
        focused.scroll_into_view_if_needed()
        assert focused.evaluate(CLIPPED_RING) is None
        checked.add(focused.evaluate("e => e.dataset.action || e.className || e.tagName"))
    assert {"copy", "edit", "regenerate", "copy-code", "PRE"} <= checked


def test_the_message_box_is_inside_a_landmark(chat: ChatPage) -> None:
    landmark = chat.input.evaluate(
        "e => e.closest('main, nav, aside, [role=main], [role=region][aria-label],"
        " form[aria-label], form[aria-labelledby]')?.tagName ?? null"
    )
    assert landmark == "MAIN"
    assert chat.page.locator("main").count() == 1


@pytest.mark.parametrize("context_options", [PHONE], ids=["phone"])
def test_every_target_on_a_phone_is_at_least_44_px(chat: ChatPage, fake: FakeUpstream) -> None:
    show_showcase(chat)
    chat.last_reply().get_by_role("button", name="Copy message").scroll_into_view_if_needed()
    assert small_targets(chat.page) == []
    chat.page.get_by_role("button", name="Conversations").click()
    expect(chat.conversation_link("Reverse a list in Python")).to_be_visible()
    assert small_targets(chat.page) == []
    chat.page.get_by_role("button", name="Close the conversation list").click()
    chat.page.get_by_role("button", name="Settings").click()
    assert small_targets(chat.page) == []


def delete_with_undo(chat: ChatPage) -> Any:
    chat.seed(conversation("Doomed", [("q", "a")], cid="doomed"))
    chat.reload()
    chat.page.get_by_role("button", name="Delete “Doomed”").click()
    toast = chat.page.locator("#toast")
    expect(toast).to_contain_text("Deleted “Doomed”.")
    return toast


def test_the_undo_toast_stays_while_it_has_the_focus(chat: ChatPage) -> None:
    chat.page.clock.install()
    toast = delete_with_undo(chat)
    toast.get_by_role("button", name="Undo").focus()
    chat.page.clock.run_for(20_000)
    expect(toast).to_be_visible()
    chat.input.focus()
    chat.page.clock.run_for(9_000)
    expect(toast).to_be_hidden()


def test_the_undo_toast_stays_while_the_pointer_is_on_it(chat: ChatPage) -> None:
    chat.page.clock.install()
    toast = delete_with_undo(chat)
    toast.get_by_role("button", name="Undo").hover()
    chat.page.clock.run_for(20_000)
    expect(toast).to_be_visible()
    chat.page.mouse.move(5, 700)
    chat.page.clock.run_for(9_000)
    expect(toast).to_be_hidden()


def view_name(chat: ChatPage) -> str:
    if chat.page.viewport_size and chat.page.viewport_size["width"] < 768:
        return "phone"
    dark = chat.page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    return "dark" if dark else "light"


@views
def test_the_shortcuts_panel(chat: ChatPage) -> None:
    press_outside_fields(chat.page, "?")
    panel = chat.page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(panel).to_be_visible()
    assert panel.evaluate("e => e.scrollWidth <= e.clientWidth")  # nothing cut off at the side
    panel.evaluate("e => e.scrollTo(0, 0)")
    screenshot(chat.page, f"shortcuts-{view_name(chat)}")
    assert axe_violations(chat.page) == []


MATH = conversation(
    "Gaussian integral",
    [
        (
            "What is the Gaussian integral?",
            "For $a > 0$:\n\n$$\\int_{-\\infty}^{\\infty} e^{-a x^2}\\,dx = \\sqrt{\\frac{\\pi}{a}}$$\n\n"
            "- [x] square it, \\(I^2\\)\n- [x] go to polar coordinates\n- [ ] check $a = 1$",
        )
    ],
    cid="math",
)


@views
def test_formulas_and_task_lists(chat: ChatPage) -> None:
    chat.seed(MATH)
    chat.open("/#math")
    expect(chat.last_reply().locator(".katex").first).to_be_visible()
    screenshot(chat.page, f"math-{view_name(chat)}")
    assert axe_violations(chat.page) == []


@views
def test_a_rate_limited_reply_and_the_skip_link(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(
        Reply(
            status=429,
            chunks=[b'{"error": {"message": "slow down"}}'],
            headers={"Content-Type": "application/json", "Retry-After": "30"},
        )
    )
    chat.input.fill("too fast")
    chat.send_button.click()  # a touch keyboard's Enter makes a new line
    expect(chat.page.get_by_role("button", name="Retry in")).to_be_disabled()
    chat.page.get_by_role("link", name="Skip to chat").focus()
    screenshot(chat.page, f"rate-limited-{view_name(chat)}")
    assert axe_violations(chat.page) == []


@views
def test_a_setting_that_is_not_sent(chat: ChatPage) -> None:
    chat.page.get_by_role("button", name="Settings").click()
    chat.page.get_by_label("Temperature").fill("5")
    screenshot(chat.page, f"settings-problem-{view_name(chat)}")
    assert axe_violations(chat.page) == []
    chat.page.keyboard.press("Escape")
    expect(chat.page.get_by_role("alert")).to_contain_text("not sent")
    assert axe_violations(chat.page) == []


@pytest.mark.parametrize("context_options", [PHONE], ids=["phone"])
def test_versions_of_a_reply_on_a_phone(chat: ChatPage) -> None:
    versions = conversation("Three tries", [("Name a colour", "Red")], cid="tries")
    first = versions["messages"][1]
    for n, colour in ((2, "Green"), (3, "Blue")):
        versions["messages"].append({**first, "id": f"tries-a{n}", "content": colour})
    for message in versions["messages"][1:]:
        message["parentId"] = "tries-u0"
    versions["leafId"] = "tries-a2"
    chat.seed(versions)
    chat.open("/#tries")
    expect(chat.last_reply().locator(".version-count")).to_have_text("2/3")
    expect(chat.content(chat.last_reply())).to_have_text("Green")
    assert small_targets(chat.page) == []
    screenshot(chat.page, "versions-phone")
    assert axe_violations(chat.page) == []


@pytest.mark.parametrize("context_options", [TOUCH_PHONE], ids=["phone"])
def test_every_message_s_actions_show_on_a_touch_phone_not_only_the_last(chat: ChatPage) -> None:
    chat.seed(
        conversation("Two turns", [("first q", "first a"), ("second q", "second a")], cid="two")
    )
    chat.open("/#two")
    expect(chat.messages).to_have_count(4)
    buttons = chat.messages.locator(".actions > button")
    expect(buttons).to_have_count(8)  # Copy and Edit or Regenerate under each message
    for button in buttons.all():
        expect(button).to_have_css("opacity", "1")  # a finger has no hover to reveal them
    chat.user_messages.first.get_by_role("button", name="Edit message").tap()
    expect(chat.page.get_by_label("Edit message", exact=True)).to_have_value("first q")


@views
def test_the_model_picker_open_and_filtered(chat: ChatPage) -> None:
    field = chat.page.get_by_role("combobox", name="Model")
    field.click()
    chat.page.keyboard.type("fake")
    expect(chat.page.get_by_role("option")).to_have_count(2)
    chat.page.keyboard.press("ArrowDown")
    screenshot(chat.page, f"model-picker-{view_name(chat)}")
    assert axe_violations(chat.page) == []
    if view_name(chat) == "phone":
        assert small_targets(chat.page) == []
    chat.page.keyboard.type("-nothing")
    expect(chat.page.get_by_text("No listed model matches")).to_be_visible()
    assert axe_violations(chat.page) == []
