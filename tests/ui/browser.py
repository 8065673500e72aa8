"""Helpers for the browser tests: Chromium's location, the chat page as a small object."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Route, expect

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

needs_chromium = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason="needs Debian's chromium (scripts/test installs it when run as root)",
    ),
]

# A phone as the issue tried it: 390 x 844 CSS pixels, touch, no hover.
TOUCH_PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}


def press_outside_fields(page: Page, key: str) -> None:
    """Press `key` with the focus on no field (the message box has it once the page loads)."""
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press(key)


class ChatPage:
    """The chat page, spoken to the way a person uses it: by labels, roles and visible text."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.input = page.get_by_label("Message", exact=True)
        self.messages = page.locator("#messages .msg")
        self.replies = page.locator("#messages .msg.assistant")
        self.user_messages = page.locator("#messages .msg.user")
        self.sidebar = page.locator("#conversations")
        self.stop_button = page.get_by_role("button", name="Stop generating")
        self.send_button = page.get_by_role("button", name="Send", exact=True)

    def open(self, path: str = "/") -> ChatPage:
        self.page.goto(path)
        expect(self.page.locator("body[data-ready]")).to_be_attached()
        return self

    def reload(self) -> None:
        self.page.reload()
        expect(self.page.locator("body[data-ready]")).to_be_attached()

    def send(self, text: str) -> None:
        """Type and press Enter, once the previous reply is done (as a person would wait)."""
        expect(self.send_button).to_be_visible()
        self.input.fill(text)
        self.input.press("Enter")

    def edit(self, message: Locator, text: str) -> None:
        """Edit one of the user's messages in place and send it, as a person does."""
        message.hover()
        message.get_by_role("button", name="Edit message").click()
        editor = self.page.get_by_label("Edit message", exact=True)
        editor.fill(text)
        editor.press("Enter")

    def last_reply(self) -> Locator:
        return self.replies.last

    def content(self, message: Locator) -> Locator:
        return message.locator(".content")

    def wait_until_idle(self) -> None:
        expect(self.page.locator("#messages .msg.streaming")).to_have_count(0)
        expect(self.send_button).to_be_visible()

    def conversation_link(self, title: str) -> Locator:
        return self.sidebar.get_by_role("link", name=title, exact=True)

    def seed(self, conversation: dict[str, Any]) -> None:
        """Store a conversation through the page's own storage module (as the page would)."""
        self.page.evaluate(
            """async (c) => { const { openStore } = await import('/static/store.js');
                              const store = await openStore(() => ({}));
                              await (store.create ? store.create(c) : store.put(c)); }""",
            conversation,
        )

    def stored(self) -> list[dict[str, Any]]:
        """Every stored conversation, read back through the storage module."""
        raw = self.page.evaluate(
            """async () => { const { openStore } = await import('/static/store.js');
                             const store = await openStore(() => ({}));
                             const all = [];
                             let after = null;
                             do {
                               const page = await store.list({after});
                               // (An array from the page before issue 8: the tests run on it too.)
                               const items = Array.isArray(page) ? page : page.items;
                               for (const s of items) all.push(await store.get(s.id));
                               after = Array.isArray(page) ? null : page.next;
                             } while (after);
                             return JSON.stringify(all); }"""
        )
        result: list[dict[str, Any]] = json.loads(raw)
        return result


def conversation(
    title: str, pairs: list[tuple[str, str]], *, cid: str = "seeded", updated: int = 1
) -> dict[str, Any]:
    """A stored conversation with the given (question, answer) pairs."""
    messages: list[dict[str, Any]] = []
    for i, (question, answer) in enumerate(pairs):
        messages.append({"id": f"{cid}-u{i}", "role": "user", "content": question, "createdAt": i})
        messages.append(
            {
                "id": f"{cid}-a{i}",
                "role": "assistant",
                "content": answer,
                "status": "done",
                "createdAt": i,
            }
        )
    return {
        "id": cid,
        "title": title,
        "createdAt": 0,
        "updatedAt": updated,
        "settings": {
            "model": "",
            "temperature": None,
            "top_p": None,
            "max_tokens": None,
            "system": "",
        },
        "messages": messages,
    }


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations. axe is served from the page's own origin (via a
    route), so the page's Content-Security-Policy stays on while it runs."""

    def serve_axe(route: Route) -> None:
        route.fulfill(body=AXE.read_bytes(), content_type="text/javascript")

    page.route("**/__axe__.js", serve_axe)
    page.add_script_tag(url="/__axe__.js")
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def background(page: Page) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


# Writes conversations straight into localStorage, in the page's first tree-less layout (one key
# per conversation with a flat list of messages, plus the index of summaries), which every
# version of the page reads: for the sidebar tests and bench/sidebar_bench.py.
SEED_MANY = """([count, pairs, prefix, needle, every]) => {
  const index = [];
  for (let i = 0; i < count; i++) {
    const id = `c${String(i).padStart(5, '0')}`;
    const messages = [];
    for (let j = 0; j < pairs; j++) {
      messages.push({id: `${id}-u${j}`, role: 'user', content: `Question ${j} of ${i}`, createdAt: i});
      const found = needle && i % every === 0 ? ` ${needle}` : '';
      messages.push({id: `${id}-a${j}`, role: 'assistant', status: 'done', createdAt: i,
                     content: `Answer ${j} of conversation ${i}, with **bold** text and \\`code\\`${found}.`});
    }
    const title = `Conversation ${i}`;
    const updatedAt = 1700000000000 + i * 1000;
    localStorage.setItem(`${prefix}c.${id}`, JSON.stringify(
      {id, title, createdAt: updatedAt, updatedAt, settings: {}, messages}));
    index.push({id, title, updatedAt});
  }
  localStorage.setItem(`${prefix}index`, JSON.stringify(index));
}"""


def seed_many(
    page: Page,
    count: int,
    *,
    pairs: int = 2,
    prefix: str = "quartchat.v1.",
    needle: str = "",
    every: int = 1,
) -> None:
    """`count` conversations, `c00000` the oldest (titled "Conversation 0"); with `needle`, every
    `every`-th one says it in its answers."""
    page.evaluate(SEED_MANY, [count, pairs, prefix, needle, every])


def ask(chat: ChatPage, text: str) -> None:
    """Send `text` and wait for the fake upstream's echo to finish (its default reply)."""
    chat.send(text)
    expect(chat.content(chat.last_reply())).to_have_text(f"Echo: {text}")
    chat.wait_until_idle()
