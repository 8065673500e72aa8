"""Page weight: index.html names every module the page imports (`<link rel="modulepreload">`), so
the browser asks for all of them at once instead of one level of imports at a time, and the list
cannot drift from the import graph; the vendored libraries the page loads are minified builds."""

from __future__ import annotations

import re

from playwright.sync_api import Request, expect

from .browser import ROOT, ChatPage, needs_chromium

STATIC = ROOT / "quartchat" / "static"
TEMPLATE = ROOT / "quartchat" / "templates" / "index.html"
ENTRY = "app.js"
# Static imports only: `import … from "./x.js"`, `import "./x.js"`, `export … from "./x.js"`. A
# dynamic `import()` (KaTeX, loaded at the first formula) is lazy on purpose.
STATIC_IMPORT = re.compile(
    r"""^\s*(?:import|export)\s(?:[^;"'`]*?\sfrom\s*)?["'](\.{1,2}/[^"']+)["']""", re.M
)
PRELOAD = re.compile(
    r"""<link rel="modulepreload" href="\{\{ url_for\('static', filename='([^']+)'\) \}\}">"""
)


def import_graph(entry: str) -> set[str]:
    """Every module `entry` imports, directly or through others, as paths under static/."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        module = todo.pop()
        source = (STATIC / module).read_text()
        for target in STATIC_IMPORT.findall(source):
            path = (STATIC / module).parent.joinpath(target).resolve().relative_to(STATIC)
            name = path.as_posix()
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def preloaded() -> list[str]:
    return PRELOAD.findall(TEMPLATE.read_text())


def test_the_import_graph_is_read_from_the_sources() -> None:
    graph = import_graph(ENTRY)
    assert {"view.js", "markdown.js", "vendor/marked/marked.esm.js", "schema.js"} <= graph
    assert "vendor/katex/katex.min.js" not in graph  # imported dynamically


def test_every_module_of_the_page_is_preloaded_and_nothing_else() -> None:
    names = preloaded()
    assert len(names) == len(set(names))
    assert set(names) == import_graph(ENTRY)


def test_the_vendored_libraries_are_minified_builds() -> None:
    # Minified code is under 5 % whitespace; the unminified builds are 15-22 %.
    scripts = sorted((STATIC / "vendor").rglob("*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        text = script.read_text()
        blank = sum(c in " \t\n" for c in text) / len(text)
        assert blank < 0.05, f"{script.relative_to(STATIC)}: {blank:.0%} whitespace, not minified"


@needs_chromium[0]
@needs_chromium[1]
def test_a_load_asks_for_no_module_the_page_did_not_preload(chat: ChatPage) -> None:
    requested: list[str] = []

    def on_request(request: Request) -> None:
        if request.resource_type == "script" and "/static/" in request.url:
            requested.append(request.url.split("/static/", 1)[1])

    chat.page.on("request", on_request)
    chat.reload()
    expect(chat.input).to_be_visible()
    # The start-up check's worker has a module map of its own, which no preload of the page fills.
    modules = set(requested) - {"theme.js", ENTRY, "check-worker.js"}
    assert modules <= set(preloaded())
