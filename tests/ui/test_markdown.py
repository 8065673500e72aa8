"""Replies rendered as Markdown, with highlighted code; model output can never run script."""

from __future__ import annotations

import pytest
from playwright.sync_api import Dialog, Frame, Locator, Page, Request, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service
from .browser import ChatPage, axe_violations, needs_chromium, screenshot

pytestmark = needs_chromium

MARKDOWN = """# Heading one
## Heading two

Some **bold**, *italic* and `inline code`.

- first item
- second item

1. one
2. two

| name | value |
|------|-------|
| a    | 1     |

See [the docs](https://example.com/docs) or [mail us](mailto:team@example.com).

```python
def add(a, b):
    return a + b  # sum
```
"""


def reply_with_text(fake: FakeUpstream, text: str) -> None:
    # Split in a few pieces so the text also passes through partial renders on the way.
    pieces = [text[i : i + 40] for i in range(0, len(text), 40)]
    fake.reply_with(Reply(chunks=completion_chunks(pieces)))


def rendered(chat: ChatPage) -> Locator:
    chat.send("render this")
    chat.wait_until_idle()
    content = chat.content(chat.last_reply())
    expect(content).not_to_be_empty()
    return content


def test_markdown_renders_headings_lists_tables_links_and_code(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with_text(fake, MARKDOWN)
    content = rendered(chat)
    expect(content.get_by_role("heading", name="Heading one")).to_be_visible()
    expect(content.locator("h2")).to_have_text("Heading two")
    expect(content.locator("strong")).to_have_text("bold")
    expect(content.locator("ul > li")).to_have_text(["first item", "second item"])
    expect(content.locator("ol > li")).to_have_text(["one", "two"])
    expect(content.get_by_role("cell", name="1")).to_be_visible()
    expect(content.locator(":not(pre) > code")).to_have_text("inline code")
    docs = content.get_by_role("link", name="the docs")
    expect(docs).to_have_attribute("href", "https://example.com/docs")
    expect(docs).to_have_attribute("target", "_blank")
    expect(docs).to_have_attribute("rel", "noopener noreferrer")
    expect(content.get_by_role("link", name="mail us")).to_have_attribute(
        "href", "mailto:team@example.com"
    )
    code = content.locator("pre code")
    expect(code).to_have_text("def add(a, b):\n    return a + b  # sum")
    expect(code.locator(".hljs-keyword")).to_have_text(["def", "return"])
    expect(code.locator(".hljs-comment")).to_have_text("# sum")
    expect(content.locator(".code-header")).to_contain_text("python")


@pytest.fixture
def context_options() -> dict[str, object]:
    return {"permissions": ["clipboard-read", "clipboard-write"]}


def test_the_copy_button_of_a_code_block_copies_just_its_code(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with_text(fake, MARKDOWN)
    content = rendered(chat)
    content.get_by_role("button", name="Copy code").click()
    expect(content.get_by_role("button", name="Copied")).to_be_visible()
    copied = chat.page.evaluate("navigator.clipboard.readText()")
    assert copied == "def add(a, b):\n    return a + b  # sum"


def test_only_http_https_and_mailto_links_are_links(chat: ChatPage, fake: FakeUpstream) -> None:
    text = (
        "[web](https://example.com) [plain](http://example.com) [mail](mailto:a@example.com) "
        "[js](javascript:alert(1)) [JS](JaVaScRiPt:alert(1)) [data](data:text/html,hi) "
        "[vb](vbscript:msgbox(1)) [rel](/api/models) ![pic](https://example.com/p.png)"
    )
    reply_with_text(fake, text)
    content = rendered(chat)
    expect(content.locator("a[href]")).to_have_count(4)  # web, plain, mail, and the image's link
    for link in content.locator("a[href]").all():
        assert link.get_attribute("href").split(":")[0] in {"https", "http", "mailto"}  # type: ignore[union-attr]
    expect(content.locator("img")).to_have_count(0)


XSS_PAYLOADS = {
    "img-onerror": "<img src=x onerror=alert(1)>",
    "javascript-link": "[x](javascript:alert(1))",
    "svg-animate": "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "iframe-srcdoc": '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "form-formaction": "<form><button formaction=javascript:alert(1)>X</button></form>",
    "script-tag": "<script>alert(1)</script>",
    "html-in-a-table": "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "autolink": "<javascript:alert(1)>",
}

ACTIVE_CONTENT = "img, svg, iframe, form, script, object, embed, input, textarea, select"
CHECK_INERT = """(root) => {
  const bad = [];
  for (const el of root.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      if (attr.name.startsWith('on') || attr.name === 'srcdoc' || attr.name === 'formaction')
        bad.push(`${el.tagName} ${attr.name}`);
    }
    const href = el.getAttribute('href');
    if (href !== null && !/^(https?|mailto):/i.test(href)) bad.push(`${el.tagName} href=${href}`);
  }
  return bad;
}"""


class Watch:
    """Dialogs opened, navigations away from the page and requests to other origins: the ways
    an exploit shows."""

    def __init__(self, page: Page, home: str) -> None:
        self.home = home
        self.dialogs: list[str] = []
        self.navigations: list[str] = []
        self.foreign_requests: list[str] = []
        page.on("dialog", self._dialog)
        page.on("framenavigated", self._navigated)
        page.on("request", self._request)

    def _request(self, request: Request) -> None:
        if not request.url.startswith((self.home + "/", "data:")):
            self.foreign_requests.append(request.url)

    def assert_nothing_happened(self) -> None:
        assert self.dialogs == []
        assert self.navigations == []
        assert self.foreign_requests == []

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _navigated(self, frame: Frame) -> None:
        if not frame.url.startswith(self.home + "/"):
            self.navigations.append(frame.url)


def click_everything(content: Locator) -> None:
    """Click whatever a payload left clickable (links with an href were checked to be http(s) or mailto, and are not followed)."""
    for element in content.locator("a:not([href]), button, summary").all():
        element.click()


@pytest.mark.parametrize("payload", XSS_PAYLOADS.values(), ids=XSS_PAYLOADS.keys())
def test_model_output_cannot_run_script(
    chat: ChatPage, fake: FakeUpstream, service: Service, payload: str
) -> None:
    watch = Watch(chat.page, service.url)
    reply_with_text(fake, payload)
    content = rendered(chat)
    assert content.locator(ACTIVE_CONTENT).count() == 0
    assert content.evaluate(CHECK_INERT) == []
    click_everything(content)
    chat.page.evaluate("new Promise((done) => setTimeout(done, 100))")  # let any handler fire
    watch.assert_nothing_happened()


RAW_HTML = [
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "<form><button formaction=javascript:alert(1)>X</button></form>",
    '<math><mtext><table><mglyph><style><img src=x onerror="alert(1)">',
    '<div style="background:url(javascript:alert(1))" onclick="alert(1)">x</div>',
    '<a href="https://example.com" target="_self">ok</a>',
]


def test_the_sanitiser_makes_raw_html_inert_too(
    chat: ChatPage, service: Service, blocked_payloads: list[str]
) -> None:
    """Raw HTML in replies is shown as text; this checks the second layer, the sanitiser, alone."""
    # Chromium applies the page's CSP even to the inert document DOMPurify parses into, so the
    # payloads' handlers and styles are reported (and blocked) before DOMPurify removes them:
    # those reports are expected; any other (a foreign URL, code not from a payload) is not.
    blocked_payloads += RAW_HTML
    watch = Watch(chat.page, service.url)
    chat.page.evaluate(
        """async (payloads) => {
          const { sanitize } = await import('/static/markdown.js');
          const box = document.createElement('div');
          box.id = 'sanitised';
          for (const p of payloads) box.append(sanitize(p));
          document.getElementById('messages').append(box);
        }""",
        RAW_HTML,
    )
    box = chat.page.locator("#sanitised")
    assert box.locator(ACTIVE_CONTENT + ", style, math").count() == 0
    assert box.evaluate(CHECK_INERT) == []
    assert box.locator("[style]").count() == 0
    safe = box.get_by_role("link", name="ok")
    expect(safe).to_have_attribute("target", "_blank")
    expect(safe).to_have_attribute("rel", "noopener noreferrer")
    click_everything(box)
    chat.page.evaluate("new Promise((done) => setTimeout(done, 100))")  # let any handler fire
    watch.assert_nothing_happened()


TASKS = """Plan:

- [x] write the tests
- [ ] make them pass
  - [ ] a nested task

1. [X] numbered and done
"""


def test_task_lists_show_their_boxes_as_read_only_checkboxes(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with_text(fake, TASKS)
    content = rendered(chat)
    done = content.get_by_role("checkbox", name="write the tests")
    expect(done).to_have_attribute("aria-checked", "true")
    expect(done).to_have_attribute("aria-disabled", "true")
    expect(content.get_by_role("checkbox", name="make them pass")).to_have_attribute(
        "aria-checked", "false"
    )
    expect(content.get_by_role("checkbox", name="a nested task")).to_be_visible()
    expect(content.get_by_role("checkbox", name="numbered and done")).to_be_checked()
    expect(content.get_by_role("checkbox")).to_have_count(4)
    assert content.locator("input, button:not(.copy-code), textarea, select").count() == 0
    todo = content.get_by_role("checkbox", name="make them pass")
    expect(todo).to_be_disabled()
    todo.click(force=True)  # there is nothing to toggle
    expect(todo).not_to_be_checked()
    screenshot(chat.page, "task-list")
    assert axe_violations(chat.page) == []


RIGHT_TO_LEFT = """שלום! זו פסקה בעברית, עם מילה אחת באנגלית: Python.

This paragraph is in English, with one Hebrew word: שלום.

- פריט ראשון
- פריט שני

مرحبا بالعالم، هذه فقرة باللغة العربية.

| שם | ערך |
|----|-----|
| א  | 1   |

```python
print("code stays left to right")
```
"""


def test_right_to_left_paragraphs_lists_and_tables_are_laid_out_right_to_left(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with_text(fake, RIGHT_TO_LEFT)
    content = rendered(chat)

    def direction(locator: Locator) -> str:
        return str(locator.evaluate("(el) => getComputedStyle(el).direction"))

    paragraphs = content.locator("p")
    assert direction(paragraphs.nth(0)) == "rtl"
    assert direction(paragraphs.nth(1)) == "ltr"
    assert direction(paragraphs.nth(2)) == "rtl"
    assert direction(content.locator("ul")) == "rtl"
    assert direction(content.locator("table")) == "rtl"
    table, wrap = content.locator("table"), content.locator(".table-wrap")
    table_box, wrap_box = table.bounding_box(), wrap.bounding_box()
    assert table_box and wrap_box  # a right-to-left table sits at the right
    assert abs(table_box["x"] + table_box["width"] - (wrap_box["x"] + wrap_box["width"])) < 1
    assert direction(content.locator("pre")) == "ltr"
    screenshot(chat.page, "right-to-left")
