"""How a reply is rendered while it streams: finished blocks keep their DOM (a selection in them
survives), only the open block is rendered again, an open code fence is plain text, renders are
paced by their cost, the cursor follows the last text, and the end result is exactly what
rendering the whole text from scratch gives. Error messages are text, never markup."""

from __future__ import annotations

import random
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, conversation, needs_chromium, screenshot

pytestmark = needs_chromium


def pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def streamed(text: str, *, size: int = 7, delay: float = 0.01) -> Reply:
    """A reply that sends `text` in small pieces, a few per frame."""
    return Reply(chunks=completion_chunks(pieces(text, size)), delay=delay)


def then_hang(*words: str, delay: float = 0.0) -> Reply:
    """A reply that sends `words`, then keeps the stream open without finishing."""
    return Reply(chunks=completion_chunks(list(words))[: 1 + len(words)], hang=True, delay=delay)


def finished_reply(chat: ChatPage) -> Locator:
    """The reply, once it has ended (its article exists and is no longer busy)."""
    reply = chat.last_reply()
    expect(reply).to_have_attribute("aria-busy", "false")
    return reply


def from_scratch(page: Page, text: str) -> str:
    """What rendering `text` whole gives, as HTML (formulas typeset)."""
    return str(
        page.evaluate(
            """async (text) => {
              const { renderMarkdown } = await import('/static/markdown.js');
              const { mathReady } = await import('/static/math.js');
              await mathReady();
              const box = document.createElement('div');
              box.append(renderMarkdown(text));
              return box.innerHTML;
            }""",
            text,
        )
    )


def html_of(content: Locator) -> str:
    content.page.evaluate("async () => (await import('/static/math.js')).mathReady()")
    return str(content.evaluate("(el) => el.innerHTML"))


DOCUMENTS = {
    "lists that continue after a blank line": """Steps:

1. one
2. two

3. three, after a blank line

- a bullet

  a second paragraph in it
- another
  1. nested
  2. nested too

4. a new list

After the lists.
""",
    "a fence that spans many chunks": "Here is the code:\n\n```python\n"
    + "".join(f"def f{i}(x):\n    return x * {i}  # line {i}\n" for i in range(25))
    + "```\n\nAnd after it, `inline` text.\n",
    "tables": """| name | value | note |
|------|------:|:----:|
| a    | 1     | *x*  |
| b    | 2     | `y`  |

Text after the table.

| one |
|-----|
| 1   |
""",
    "nested quotes": """> outer quote
> > inner quote
> > still inner
> back to the outer one
> - a list in it
> ```
> code in a quote
> ```

> a second quote
""",
    "reference links": """See [the docs] and [the API][api], or [nothing].

A paragraph between.

[the docs]: https://example.com/docs
[api]: https://example.com/api "The API"
""",
    "a setext heading and a lazy line": """Title
=====

Subtitle
--------

> quoted
lazy continuation

- item
lazy in the item
""",
    "math, tasks and right to left": """Inline $\\int_0^1 x\\,dx$ and \\(a^2\\); money: $5 and $10.

\\[
\\frac{1}{2}
\\]

- [x] done
- [ ] to do

שלום, זו פסקה בעברית.

مرحبا بالعالم
""",
}


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_a_streamed_reply_ends_exactly_as_a_from_scratch_render(
    chat: ChatPage, fake: FakeUpstream, text: str
) -> None:
    fake.reply_with(streamed(text))
    chat.send("stream this")
    content = chat.content(finished_reply(chat))
    assert html_of(content) == from_scratch(chat.page, text)


# Every prefix of each document, rendered in the page with the streaming renderer itself, then
# finished: the exhaustive form of the test above (no network, so every boundary is hit).
EVERY_PREFIX = """async (text) => {
  const { StreamRenderer } = await import('/static/stream-render.js');
  const { renderMarkdown } = await import('/static/markdown.js');
  const { mathReady } = await import('/static/math.js');
  await mathReady();
  const box = document.createElement('div');
  document.getElementById('messages').append(box);
  const renderer = new StreamRenderer(box);
  for (let i = 1; i < text.length; i++) renderer.render(text.slice(0, i));
  renderer.finish(text);
  const whole = document.createElement('div');
  whole.append(renderMarkdown(text));
  box.remove();
  return [box.innerHTML, whole.innerHTML];
}"""


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_streaming_any_prefix_then_finishing_gives_the_from_scratch_render(
    chat: ChatPage, text: str
) -> None:
    streamed_html, whole_html = chat.page.evaluate(EVERY_PREFIX, text)
    assert streamed_html == whole_html


# Pieces of Markdown whose boundaries are easy to get wrong while streaming: lists that go on after
# a blank line, setext underlines, lazy lines, fences (open and closed), tables, quotes, link
# definitions before and after their use, formulas, HTML, tasks, right-to-left text, CRLF.
PIECES = [
    "Some *text* with `code` and a [link](https://example.com/x).\n",
    "Another line of text\n",
    "\n",
    "\n\n",
    "# Heading\n",
    "#no space heading\n",
    "#\n",
    "Setext heading\n---\n",
    "Title\n===\n",
    "=====\n",
    "---\n",
    "___\n",
    "***\n",
    "- item one\n- item two\n",
    "- item\n\n- loose item\n",
    "  continued in item\n",
    "1. first\n2. second\n",
    "3. third\n",
    "2. two\n\n3. three\n",
    "1) paren one\n",
    "- [x] done\n- [ ] todo\n",
    "- outer\n  - inner\n    - deeper\n",
    "- a\n-\n- c\n",
    "   - three-space item\n",
    "\t- tabbed item\n",
    "- item with fence:\n\n  ```py\n  x = 1\n  ```\n",
    "```python\ndef f(x):\n    return x\n```\n",
    "```js\nconst a = 1;\n",
    "```\n",
    "~~~\ntilde fence\n~~~\n",
    "    indented code\n",
    "> quote line\n> more quote\n",
    "> > nested quote\n",
    "> - quoted list\n> - more\n",
    "lazy continuation\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
    "| 3 | 4 |\n",
    "| $a$ | `b` |\n|:-:|--:|\n",
    "See [the ref] and [other][ref2].\n",
    "[the ref]: https://example.com/ref\n",
    '[ref2]: https://example.com/2 "Title"\n',
    '[multi]: https://example.com/m\n  "title on the next line"\n',
    "Use [multi] here.\n",
    "$$\n\\int_0^1 x\\,dx\n$$\n",
    "\\[\n\\frac{1}{2}\n\\]\n",
    "\\[ x^2 \\]\n",
    "$$x$$ inline display\n",
    "Inline $a^2 + b^2$ and \\(x\\) and $5 and $10.\n",
    "<div>\nhtml block\n</div>\n",
    "<!-- comment\n\nstill comment -->\n",
    "Text with trailing spaces  \nnext\n",
    "Line ending with a backslash\\\nnext\n",
    "Term with **bold\n",
    "still bold** end\n",
    "שלום עולם\n",
    "\r\n",
]

RANDOM_DOCUMENTS = """async ([documents, strides]) => {
  const { StreamRenderer } = await import('/static/stream-render.js');
  const { renderMarkdown } = await import('/static/markdown.js');
  const { mathReady } = await import('/static/math.js');
  await mathReady();
  const failures = [];
  for (const [n, text] of documents.entries()) {
    const box = document.createElement('div');
    const renderer = new StreamRenderer(box);
    for (let i = 1; i < text.length; i += strides[n][i % strides[n].length]) renderer.render(text.slice(0, i));
    renderer.finish(text);
    const whole = document.createElement('div');
    whole.append(renderMarkdown(text));
    if (box.innerHTML !== whole.innerHTML) failures.push(text);
  }
  return failures;
}"""


def test_random_documents_streamed_in_random_pieces_end_as_a_from_scratch_render(
    chat: ChatPage,
) -> None:
    rng = random.Random(20261201)
    documents = ["".join(rng.choices(PIECES, k=rng.randint(2, 9))) for _ in range(150)]
    # Half of them a character at a time (every boundary), half in pieces of up to 40.
    strides = [[1] if n % 2 else [rng.randint(1, 40) for _ in range(97)] for n in range(150)]
    warnings: list[str] = []
    chat.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    assert chat.page.evaluate(RANDOM_DOCUMENTS, [documents, strides]) == []
    assert warnings == []  # no finished block had to be rendered again at the end


def test_a_selection_in_a_finished_paragraph_survives_while_the_reply_streams(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    words = [f" word{i}" for i in range(300)]
    fake.reply_with(
        Reply(chunks=completion_chunks(["The first paragraph.\n\n", *words]), delay=0.02)
    )
    chat.send("write a lot")
    content = chat.content(chat.last_reply())
    expect(content.locator("p")).to_have_count(2)
    chat.page.evaluate(
        """(content) => {
          const text = content.querySelector('p').firstChild;
          const range = document.createRange();
          range.setStart(text, 4);
          range.setEnd(text, 19);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
        }""",
        content.element_handle(),
    )
    assert chat.page.evaluate("getSelection().toString()") == "first paragraph"
    expect(content).to_contain_text("word150")  # many frames later
    assert chat.page.evaluate("getSelection().toString()") == "first paragraph"
    finished_reply(chat)
    assert chat.page.evaluate("getSelection().toString()") == "first paragraph"


def test_finished_blocks_are_not_touched_while_the_reply_streams(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    head = "Euler: $e^{i\\pi} + 1 = 0$.\n\n```python\nprint('hi')\n```\n\n"
    words = [f" more{i}" for i in range(200)]
    fake.reply_with(Reply(chunks=completion_chunks([head, *words]), delay=0.02))
    chat.send("formula, code, then words")
    content = chat.content(chat.last_reply())
    expect(content.locator(".katex")).to_have_count(1)
    expect(content.locator(".hljs-built_in")).to_have_text("print")
    chat.page.evaluate(
        """(content) => {
          window.firstBlocks = [...content.children].slice(0, 2);
          window.touched = 0;
          // The cursor's class moving off the code block is the one change expected.
          const watch = new MutationObserver((records) => {
            window.touched += records.filter((r) => r.attributeName !== 'class').length; });
          for (const el of window.firstBlocks)
            watch.observe(el, {subtree: true, childList: true, characterData: true, attributes: true});
        }""",
        content.element_handle(),
    )
    expect(content).to_contain_text("more150")
    finished_reply(chat)
    assert chat.page.evaluate("window.firstBlocks.every((el) => el.isConnected)")
    assert chat.page.evaluate("window.touched") == 0  # formula and code typeset once, kept


def test_an_open_code_fence_is_plain_text_until_it_closes(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(then_hang("```python\n", "def f(x):\n", "    return x\n"))
    chat.send("code please")
    code = chat.content(chat.last_reply()).locator("pre code")
    expect(code).to_have_text("def f(x):\n    return x")
    expect(code.locator(".hljs-keyword")).to_have_count(0)
    chat.stop_button.click()
    expect(code.locator(".hljs-keyword")).to_have_text(["def", "return"])  # finished: highlighted


def test_a_closed_fence_is_highlighted_while_the_reply_goes_on(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(then_hang("```python\n", "def f(x):\n", "    return x\n", "```\n", "\nAfter"))
    chat.send("code please")
    content = chat.content(chat.last_reply())
    expect(content.locator("p")).to_have_text("After")
    expect(content.locator("pre code .hljs-keyword")).to_have_text(["def", "return"])
    chat.stop_button.click()


PACED = """async () => {
  const { StreamRenderer } = await import('/static/stream-render.js');
  const box = document.createElement('div');
  box.className = 'content markdown';
  document.getElementById('messages').append(box);
  const renderer = new StreamRenderer(box);
  let busy = 0, renders = 0, frames = 0;
  const render = renderer.render.bind(renderer);
  renderer.render = (text, final) => {
    const start = performance.now();
    render(text, final);
    busy += performance.now() - start;
    renders += 1;
  };
  // One big open block (a table that keeps growing): every render of it is expensive.
  let text = '| a | b | c |\\n|---|---|---|\\n' + '| cell | *x* | `y` |\\n'.repeat(3000);
  const start = performance.now();
  const countFrames = () => { frames += 1; if (performance.now() - start < 2000) requestAnimationFrame(countFrames); };
  requestAnimationFrame(countFrames);
  while (performance.now() - start < 2000) {
    text += '| more | *x* | `y` |\\n';
    renderer.update(text);
    await new Promise((done) => setTimeout(done, 4));
  }
  const elapsed = performance.now() - start;
  renderer.cancel();
  box.remove();
  return { busy: busy / elapsed, renders, frames, perRender: busy / renders };
}"""


def test_renders_of_a_big_open_block_are_paced_by_their_cost(chat: ChatPage) -> None:
    result: dict[str, Any] = chat.page.evaluate(PACED)
    assert result["perRender"] > 8, result  # the block is expensive enough to need pacing
    assert result["renders"] <= result["frames"], result  # never more than one a frame
    assert result["busy"] < 0.4, result  # ~1/(1 + 3) of the time when renders cost 3 waits


def cursor_adds_no_line(reply: Locator) -> bool:
    """Whether the streaming cursor sits on the last line of text rather than on a line of its
    own: the content is as tall with it as without it."""
    return bool(
        reply.evaluate(
            """(article) => {
              const content = article.querySelector('.content');
              const withCursor = content.getBoundingClientRect().height;
              article.classList.remove('streaming');
              const without = content.getBoundingClientRect().height;
              article.classList.add('streaming');
              return Math.abs(withCursor - without) < 0.5;
            }"""
        )
    )


CURSOR_CASES = {
    "after a code block": ("Code:\n\n", "```python\n", "x = 1\n", "```\n"),
    "after a list": ("Items:\n\n", "- one\n", "- two\n", "  - nested"),
    "after a table": ("| a |\n", "|---|\n", "| nested |\n"),
    "after a quote": ("> quoted", " nested"),
    "after a paragraph": ("Just", " nested"),
}


@pytest.mark.parametrize("words", CURSOR_CASES.values(), ids=CURSOR_CASES.keys())
def test_the_streaming_cursor_sits_at_the_end_of_the_last_text(
    chat: ChatPage, fake: FakeUpstream, words: tuple[str, ...]
) -> None:
    fake.reply_with(then_hang(*words))
    chat.send("go on")
    reply = chat.last_reply()
    last = "x = 1" if "```\n" in words else "nested"
    expect(chat.content(reply)).to_contain_text(last)
    expect(reply.locator(".stream-cursor")).to_have_count(1)
    assert cursor_adds_no_line(reply)
    if words == CURSOR_CASES["after a code block"]:
        screenshot(chat.page, "streaming-cursor-after-code")
    chat.stop_button.click()
    expect(reply.locator(".stream-cursor")).to_have_count(0)


def test_an_error_message_is_shown_as_text_never_as_markup(chat: ChatPage) -> None:
    markup = "<b>html</b> <img src=x onerror=alert(1)> &amp; <i>more</i>"
    stored = conversation("Broken", [("hi", "")], cid="broken")
    stored["messages"][1].update(status="error", error={"message": markup, "code": "<b>CODE</b>"})
    chat.seed(stored)
    chat.open("/#broken")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text(markup)
    expect(error).to_contain_text("<b>CODE</b>")
    assert error.locator("b, i, img").count() == 0


def test_an_upstream_error_with_markup_in_its_message_is_shown_as_text(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    body = b'{"error": {"message": "<b>html</b> is <i>not</i> welcome"}}'
    fake.reply_with(Reply(status=400, chunks=[body], headers={"Content-Type": "application/json"}))
    chat.send("fail please")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("<b>html</b> is <i>not</i> welcome")
    assert error.locator("b, i").count() == 0


def test_an_upstream_html_error_page_shows_its_title_as_text(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
        b"<body><h1>502 Bad Gateway</h1><script>alert(1)</script></body></html>"
    )
    fake.reply_with(Reply(status=502, chunks=[page], headers={"Content-Type": "text/html"}))
    chat.send("fail please")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("502 Bad Gateway")
    expect(error).not_to_contain_text("<h1>")
    assert error.locator("h1, script, title").count() == 0
