"""Page weight: index.html names every module the page imports (`<link rel="modulepreload">`), so
the browser asks for all of them at once instead of one level of imports at a time, and the list
cannot drift from the import graph, without accounts and with them (where the page loads the
server store and the logout button's modules too); the vendored libraries the page loads are
minified builds."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from ..fake_upstream import FakeUpstream
from ..service import Service
from .accounts.conftest import ACCOUNTS_ENV
from .accounts.people import ADMIN_EMAIL, ADMIN_PASSWORD, log_in
from .browser import ROOT, ChatPage, needs_chromium
from .conftest import WATCH_CSP, csp_problems, watch

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
ACCOUNTS_ONLY = re.compile(r"\{% if account %\}(.*?)\{% endif %\}", re.S)
# Logged in, the page also runs the server store (which store.js imports dynamically, so that
# without accounts it is never fetched) and logout.js (a module script of its own).
LOGGED_IN_ENTRIES = ("store/server.js", "logout.js")
# Fetched as themselves, not as imports: a preload would add nothing. The start-up check's worker
# has a module map of its own, which no preload of the page fills.
NOT_IMPORTED = {"theme.js", ENTRY, "logout.js", "check-worker.js"}
MODES = ["none", "accounts"]


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


def preloaded(mode: str) -> list[str]:
    """The modules index.html preloads in `mode` (AUTH_MODE; with accounts, for a user)."""
    template = TEMPLATE.read_text()
    if mode == "none":
        template = ACCOUNTS_ONLY.sub("", template)
    return PRELOAD.findall(template)


def page_modules(mode: str) -> set[str]:
    """Every module the page imports in `mode`, whether a module script or store.js asks."""
    modules = import_graph(ENTRY)
    if mode == "accounts":
        for entry in LOGGED_IN_ENTRIES:
            modules |= {entry, *import_graph(entry)}
    return modules - NOT_IMPORTED


def test_the_import_graph_is_read_from_the_sources() -> None:
    graph = import_graph(ENTRY)
    assert {"view.js", "markdown.js", "vendor/marked/marked.esm.js", "schema.js"} <= graph
    assert "vendor/katex/katex.min.js" not in graph  # imported dynamically
    assert "store/server.js" not in graph  # imported dynamically, with accounts only


@pytest.mark.parametrize("mode", MODES)
def test_every_module_of_the_page_is_preloaded_and_nothing_else(mode: str) -> None:
    names = preloaded(mode)
    assert len(names) == len(set(names))
    assert set(names) == page_modules(mode)


def test_the_vendored_libraries_are_minified_builds() -> None:
    # Minified code is under 5 % whitespace; the unminified builds are 15-22 %.
    scripts = sorted((STATIC / "vendor").rglob("*.js"))
    assert len(scripts) >= 5
    for script in scripts:
        text = script.read_text()
        blank = sum(c in " \t\n" for c in text) / len(text)
        assert blank < 0.05, f"{script.relative_to(STATIC)}: {blank:.0%} whitespace, not minified"


@pytest.fixture(scope="module")
def accounts_service(fake: FakeUpstream) -> Iterator[Service]:
    env = {**ACCOUNTS_ENV, "ADMIN_EMAIL": ADMIN_EMAIL, "ADMIN_PASSWORD": ADMIN_PASSWORD}
    with Service(fake.url, **env) as service:
        yield service


@pytest.fixture
def logged_in_page(
    browser: Browser, request: pytest.FixtureRequest, blocked_payloads: list[str]
) -> Iterator[Page]:
    """The chat page of a logged-in admin on a service with accounts, watched like `page`."""
    service: Service = request.getfixturevalue("accounts_service")
    context = browser.new_context(base_url=service.url, viewport={"width": 1280, "height": 800})
    context.add_init_script(WATCH_CSP)
    problems: list[str] = []
    page = watch(context.new_page(), problems)
    log_in(context, ADMIN_EMAIL, ADMIN_PASSWORD)
    yield page
    problems += csp_problems(page, blocked_payloads)
    context.close()
    assert problems == []


@needs_chromium[0]
@needs_chromium[1]
@pytest.mark.parametrize("mode", MODES)
def test_a_load_asks_for_no_module_the_page_did_not_preload(
    mode: str, request: pytest.FixtureRequest
) -> None:
    page: Page = request.getfixturevalue("page" if mode == "none" else "logged_in_page")
    chat = ChatPage(page).open()
    requested: list[str] = []

    def on_request(request: Request) -> None:
        if request.resource_type == "script" and "/static/" in request.url:
            requested.append(request.url.split("/static/", 1)[1])

    chat.page.on("request", on_request)
    chat.reload()
    expect(chat.input).to_be_visible()
    if mode == "accounts":  # the store of a logged-in user was loaded, so it was asked for
        assert "store/server.js" in requested
    assert set(requested) - NOT_IMPORTED <= set(preloaded(mode))
