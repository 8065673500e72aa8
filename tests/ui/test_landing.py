"""Where an opened conversation lands: at its newest message from the sidebar, at the message
found from a search result (marked); and a system prompt in force said above the conversation.
The same for a logged-in user in tests/ui/accounts/test_landing.py."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser import ChatPage, axe_violations, conversation, needs_chromium, screenshot

pytestmark = needs_chromium

NEEDLE = "periwinkle"


def long_conversation(cid: str = "long", system: str = "") -> dict[str, Any]:
    """40 messages, each answer taller than a screen; answer 5 alone says NEEDLE."""
    pairs = []
    for i in range(20):
        said = f" The word is {NEEDLE}." if i == 5 else ""
        lines = [
            f"Answer {i}, paragraph {j}: " + "some words to fill a line. " * 6 for j in range(8)
        ]
        code = "```python\n" + "\n".join(f"x{j} = {j}" for j in range(12)) + "\n```"
        pairs.append((f"Question {i}", "\n\n".join(lines) + said + "\n\n" + code))
    made = conversation("A long conversation", pairs, cid=cid, updated=5)
    made["settings"]["system"] = system
    return made


# Settled: every message drawn, and nothing left to move it (two frames after the last batch).
SETTLED = """async (count) => {
  const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  while (document.querySelectorAll('#messages .msg').length < count) await frames();
  await document.fonts.ready;
  for (let i = 0; i < 5; i++) await frames();
}"""


# Counts the messages put into the list from now on.
COUNT_DRAWN = """() => {
  window.drawn = 0;
  new MutationObserver((changes) => {
    for (const change of changes)
      for (const node of change.addedNodes) if (node.matches?.('.msg')) window.drawn += 1;
  }).observe(document.getElementById('messages'), {childList: true});
}"""


def settle(page: Page, count: int) -> None:
    page.evaluate(SETTLED, count)


def at_bottom(page: Page) -> bool:
    return bool(
        page.evaluate(
            "(() => { const s = document.getElementById('scroller');"
            " return s.scrollHeight - s.scrollTop - s.clientHeight <= 48; })()"
        )
    )


def test_a_long_conversation_opened_from_the_sidebar_lands_at_its_newest_message(
    chat: ChatPage,
) -> None:
    chat.seed(long_conversation())
    chat.seed(conversation("A short one", [("hi", "hello")], cid="short", updated=9))
    chat.reload()
    chat.conversation_link("A short one").click()
    chat.input.fill("a draft\nof several\nlines\nthat makes\nthe box\ntaller")
    chat.page.evaluate(COUNT_DRAWN)
    chat.conversation_link("A long conversation").click()
    settle(chat.page, 40)
    assert at_bottom(chat.page)
    assert chat.page.evaluate("window.drawn") == 40  # drawn once, not drawn and then drawn again
    expect(chat.content(chat.last_reply())).to_be_in_viewport()
    expect(chat.page.get_by_role("button", name="Jump to latest")).to_be_hidden()


def test_a_search_result_opens_its_conversation_at_the_message_found_marked(
    chat: ChatPage,
) -> None:
    chat.seed(long_conversation())
    chat.seed(conversation("Unrelated", [("hi", "hello")], cid="other", updated=9))
    chat.reload()
    chat.page.get_by_role("searchbox").fill(NEEDLE)
    expect(chat.conversation_link("Unrelated")).to_have_count(0)  # the results are in
    chat.conversation_link("A long conversation").click()
    settle(chat.page, 40)
    found = chat.page.locator('#messages .msg[data-id="long-a5"]')
    expect(found).to_have_class("msg assistant match")
    expect(found.get_by_text(NEEDLE)).to_be_in_viewport()
    expect(chat.page.locator("#messages .msg.match")).to_have_count(1)
    assert not at_bottom(chat.page)
    expect(chat.page.get_by_role("button", name="Jump to latest")).to_be_visible()


def test_a_system_prompt_in_force_is_said_above_the_conversation_and_shown_on_demand(
    chat: ChatPage,
) -> None:
    chat.seed(long_conversation(system="You are a pirate.\nAnswer in rhymes."))
    chat.seed(conversation("No prompt here", [("hi", "hello")], cid="short", updated=9))
    chat.reload()
    note = chat.page.get_by_text("A system prompt is set")
    expect(chat.content(chat.last_reply())).to_have_count(0)
    expect(note).to_be_hidden()  # a new chat without one
    chat.conversation_link("A long conversation").click()
    expect(note).to_be_visible()
    text = chat.page.get_by_text("You are a pirate.")
    expect(text).to_be_hidden()
    note.click()
    expect(text).to_be_visible()
    expect(chat.page.locator(".system-prompt-text")).to_have_text(
        "You are a pirate.\nAnswer in rhymes."
    )
    chat.conversation_link("No prompt here").click()
    expect(note).to_be_hidden()


@pytest.mark.parametrize(
    "context_options", [{"color_scheme": "light"}, {"color_scheme": "dark"}], ids=["light", "dark"]
)
def test_the_system_prompt_and_a_search_match_look_right(
    chat: ChatPage, context_options: dict[str, str]
) -> None:
    chat.seed(long_conversation(system="You are a pirate."))
    chat.seed(conversation("Unrelated", [("hi", "hello")], cid="other", updated=9))
    chat.reload()
    chat.page.get_by_role("searchbox").fill(NEEDLE)
    expect(chat.conversation_link("Unrelated")).to_have_count(0)
    chat.conversation_link("A long conversation").click()
    settle(chat.page, 40)
    chat.page.get_by_text("A system prompt is set").click()
    assert axe_violations(chat.page) == []
    screenshot(chat.page, f"search-match-{context_options['color_scheme']}")
    chat.page.locator("#scroller").evaluate("(s) => { s.scrollTop = 0; }")
    expect(chat.page.get_by_text("You are a pirate.")).to_be_visible()
    assert axe_violations(chat.page) == []
    screenshot(chat.page, f"system-prompt-{context_options['color_scheme']}")
