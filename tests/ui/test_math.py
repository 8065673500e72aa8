"""Formulas in replies, typeset by KaTeX under the page's strict CSP: $…$, $$…$$, \\(…\\) and
\\[…\\] keep their backslashes, dollar amounts stay text, a formula that does not parse is shown
as its source, and no formula can run script, load anything, navigate or hang the page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service
from .browser import ChatPage, axe_violations, needs_chromium, screenshot
from .test_markdown import CHECK_INERT, Watch

pytestmark = needs_chromium


def reply_with(fake: FakeUpstream, text: str) -> None:
    pieces = [text[i : i + 9] for i in range(0, len(text), 9)]
    fake.reply_with(Reply(chunks=completion_chunks(pieces)))


def rendered(chat: ChatPage) -> Locator:
    """The last reply's content, once the reply has ended and its formulas are typeset."""
    chat.send("some maths")
    reply = chat.last_reply()
    expect(reply).to_have_attribute("aria-busy", "false")
    chat.page.evaluate("async () => (await import('/static/math.js')).mathReady()")
    return chat.content(reply)


def sources(content: Locator) -> list[str]:
    """The TeX each typeset formula was made from (KaTeX keeps it in its MathML annotation)."""
    return content.locator("annotation[encoding='application/x-tex']").all_text_contents()


def test_every_delimiter_is_typeset_and_keeps_its_backslashes(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with(
        fake,
        "Inline $\\int_0^1 x\\,dx$ and \\(\\alpha + \\beta\\), displayed $$\\sum_{k=1}^n k$$.\n\n"
        "\\[\n\\frac{a}{b} \\cdot \\sqrt{2}\n\\]\n\n$$\n\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}\n$$\n",
    )
    content = rendered(chat)
    assert [s.strip() for s in sources(content)] == [
        "\\int_0^1 x\\,dx",
        "\\alpha + \\beta",
        "\\sum_{k=1}^n k",
        "\\frac{a}{b} \\cdot \\sqrt{2}",
        "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
    ]
    expect(content.locator(".math-inline")).to_have_count(2)
    expect(content.locator(".math-display")).to_have_count(3)
    expect(content.locator("div.math-display")).to_have_count(2)  # the two on lines of their own
    expect(content).not_to_contain_text("\\[")
    expect(content).not_to_contain_text("$")
    screenshot(chat.page, "math")
    assert axe_violations(chat.page) == []


def test_dollar_amounts_and_code_stay_text(chat: ChatPage, fake: FakeUpstream) -> None:
    text = "It costs $5 and $10, or US$20. Not math: `$x$` and \\$y\\$ either."
    reply_with(fake, text)
    content = rendered(chat)
    expect(content.locator(".katex, .math")).to_have_count(0)
    expect(content).to_have_text("It costs $5 and $10, or US$20. Not math: $x$ and $y$ either.")


def test_a_formula_that_does_not_parse_is_shown_as_its_source(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    reply_with(fake, "Broken: $\\frac{1}{$ and fine: $x^2$.")
    content = rendered(chat)
    error = content.locator(".math-error")
    expect(error).to_have_text("$\\frac{1}{$")
    expect(error).to_have_attribute("title", re.compile(r"^KaTeX parse error: .*\\frac\{1\}\{$"))
    assert sources(content) == ["x^2"]


def test_bold_symbols_need_no_style_attribute(chat: ChatPage, fake: FakeUpstream) -> None:
    # KaTeX's MathML for \pmb would set a style attribute, which the CSP refuses (and reports,
    # which fails this test through the page fixture); it is rendered as \boldsymbol instead.
    reply_with(fake, "Bold: $\\pmb{x} + \\boldsymbol{y}$")
    content = rendered(chat)
    assert sources(content) == ["\\pmb{x} + \\boldsymbol{y}"]


def test_a_formula_nested_deeper_than_any_real_one_is_shown_as_its_source(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    # A thousand levels are within KaTeX's reach (a few thousand overflow its stack), but cost
    # a long task and a DOM as deep to lay out; past 100 levels a formula is refused.
    deep = "$" + "{" * 1000 + "x" + "}" * 1000 + "$"
    reply_with(fake, f"Deep: {deep} and $\\sqrt{{{'{' * 50}x{'}' * 50}}}$")
    content = rendered(chat)
    expect(content.locator(".math-error")).to_have_text(deep)
    expect(content.locator(".katex")).to_have_count(1)  # fifty levels are fine


KATEX_PAYLOADS = {
    "href": "$\\href{javascript:alert(1)}{click}$",
    "href-display": "\\[\\href{javascript:alert(1)}{click}\\]",
    "url": "$\\url{javascript:alert(1)}$",
    "html-data": "$\\htmlData{foo=bar, onclick=alert(1)}{x}$",
    "html-id": "$\\htmlId{evil}{x}$",
    "html-class": "$\\htmlClass{evil}{x}$",
    "html-style": "$\\htmlStyle{background:url(https://evil.example/x)}{x}$",
    "include-graphics": "$\\includegraphics{https://evil.example/x.png}$",
    "css-in-a-colour": "$\\color{red;background:url(https://evil.example/)}{x}$",
    "markup-in-text": "$\\text{<img src=x onerror=alert(1)>}$",
    "huge-rule": "$$\\rule{100000em}{100000em}$$",
    "huge-kern": "$a\\kern{100000em}b\\hspace{100000em}c$",
    "deep-braces": "$" + "{" * 2500 + "x" + "}" * 2500 + "$",
    "deeper-braces": "$" + "{" * 5000 + "x" + "}" * 5000 + "$",
    "unclosed-braces": "$" + "{" * 5000 + "x$",
    "macro-bomb": "$\\def\\a{\\a\\a}\\a$",
    "macro-fanout": "$\\def\\a{xxxxxxxxxx}\\def\\b{\\a\\a\\a\\a\\a\\a\\a\\a\\a\\a}"
    "\\def\\c{\\b\\b\\b\\b\\b\\b\\b\\b\\b\\b}\\def\\d{\\c\\c\\c\\c\\c\\c\\c\\c\\c\\c}\\d\\d\\d$",
}

LONGEST_TASK = """() => { window.longest = 0; window.since = performance.now();
  new PerformanceObserver((list) => { for (const e of list.getEntries())
    if (e.startTime >= window.since) window.longest = Math.max(window.longest, e.duration); })
    .observe({type: 'longtask', buffered: true}); }"""
# Elements that could run script, load something or navigate; KaTeX's own SVG (for roots and
# stretchy arrows) may appear, and is checked to hold nothing but shapes.
FORBIDDEN = "a, img, image, iframe, object, embed, script, form, input, button, use, foreignObject, animate, set, [id], [data-foo], .evil"
SVG_PARTS_ONLY = """(root) => [...root.querySelectorAll('svg *')].map((el) => el.localName)
  .filter((name) => !['path', 'line', 'g'].includes(name))"""
STYLES_WITH_URLS = """(root) => [...root.querySelectorAll('[style]')]
  .map((el) => el.getAttribute('style')).filter((style) => /url\\(|expression|javascript/i.test(style))"""


@pytest.mark.parametrize("payload", KATEX_PAYLOADS.values(), ids=KATEX_PAYLOADS.keys())
def test_no_formula_can_run_script_load_anything_or_hang_the_page(
    chat: ChatPage, fake: FakeUpstream, service: Service, payload: str
) -> None:
    chat.page.evaluate("async () => (await import('/static/math.js')).mathReady()")
    chat.page.evaluate(LONGEST_TASK)
    watch = Watch(chat.page, service.url)
    reply_with(fake, f"Formula: {payload} done.")
    content = rendered(chat)
    expect(content).to_contain_text("done.")
    assert content.locator(FORBIDDEN).count() == 0
    assert content.evaluate(CHECK_INERT) == []
    assert content.evaluate(SVG_PARTS_ONLY) == []
    assert content.evaluate(STYLES_WITH_URLS) == []
    for formula in content.locator(".katex").all():  # sizes are bounded (maxSize: 20em)
        box = formula.bounding_box()
        assert box is not None and box["height"] < 1000 and box["width"] < 2000
    for element in content.locator(".math").all():  # typeset, or shown as its source
        assert element.locator(".katex").count() == 1 or element.text_content() == payload
    chat.page.evaluate("new Promise((done) => setTimeout(done, 100))")  # let any handler fire
    watch.assert_nothing_happened()
    assert chat.page.evaluate("window.longest") < 200  # the page stayed responsive


def test_the_readable_text_of_a_reply_gives_formulas_as_their_source(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    # For the screen-reader announcement of a finished reply: textContent would read KaTeX's
    # MathML and HTML both ("x2x^2x2").
    reply_with(fake, "Area: $\\pi r^2$, done.")
    content = rendered(chat)
    text = content.evaluate("async (el) => (await import('/static/markdown.js')).readableText(el)")
    assert text == "Area: \\pi r^2, done."
