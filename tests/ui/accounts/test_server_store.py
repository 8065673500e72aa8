"""The chat page with conversations on the server (a logged-in user): another browser of the same
person sees them without a reload, a reply goes on when its page is closed or reloaded (the
reloaded page follows it live, in place), a stale write is refused and taken back in, offline
sends wait and go, the browser's own conversations are imported once, and another person's
conversation is "not found"."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Response, expect

from ...fake_upstream import FakeUpstream, Reply, completion_chunks
from ..browser import ChatPage, conversation, needs_chromium
from ..conftest import watch
from ..test_transfer import download, import_file, old_conversation, open_transfer
from .people import AdminAPI, Person, log_in, open_page

pytestmark = needs_chromium

SYNC_WITHIN_MS = 10_000  # the change feed is polled every 3 s
# Words no two of which are alike, so a piece shown twice or lost shows in the text.
WORDS = ["Alpha", " bravo", " charlie", " delta", " echo", " foxtrot", " golf", " hotel", " india"]


@pytest.fixture
def person(page: Page, admin_api: AdminAPI) -> Person:
    """A user of their own, logged in in the test's browser."""
    person = admin_api.new_user()
    log_in(page.context, person.email)
    return person


class Paced:
    """The fake upstream's next reply, said one word each time the test lets it (`say`): the
    test looks at the page between two words instead of guessing with a delay."""

    def __init__(self, fake: FakeUpstream, words: list[str] = WORDS) -> None:
        self.words = words
        self.said = 0
        self.step = threading.Semaphore(0)
        fake.reply_with(Reply(chunks=completion_chunks(words), step=self.step))

    @property
    def shown(self) -> str:
        """What has been said so far."""
        return "".join(self.words[: self.said])

    @property
    def full(self) -> str:
        return "".join(self.words)

    def say(self, count: int) -> str:
        """Let `count` more words out; answers what has been said then."""
        self.step.release(count)
        self.said += count
        return self.shown

    def finish(self) -> str:
        """Let the rest out (the words, the finish, the usage and `[DONE]`); answers the text."""
        self.step.release(len(self.words) - self.said + 3)
        self.said = len(self.words)
        return self.full


def conversation_id(page: Page) -> str:
    return str(page.evaluate("decodeURIComponent(location.hash.slice(1))"))


def on_server(context: BrowserContext, path: str) -> Any:
    """What the API answers this browser's session (no page involved)."""
    response = context.request.get(path)
    assert response.ok, response.text()
    return response.json()


def until(condition: Callable[[], bool], page: Page, seconds: float = 10) -> None:
    for _ in range(int(seconds * 10)):
        if condition():
            return
        page.wait_for_timeout(100)
    raise AssertionError("the condition did not come true in time")


def leaf_on_server(context: BrowserContext, cid: str, base: str = "") -> dict[str, Any]:
    """The message the conversation's leaf is, as the server (at `base`, else the browser's
    own) has it."""
    saved = on_server(context, f"{base}/api/conversations/{cid}")
    return dict(next(m for m in saved["messages"] if m["id"] == saved["leaf_id"]))


def titles_on_server(context: BrowserContext) -> list[str]:
    return [item["title"] for item in on_server(context, "/api/conversations?limit=200")["items"]]


def test_a_conversation_sent_in_one_browser_appears_in_another_without_a_reload(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> None:
    phone = other_browser()
    log_in(phone.context, person.email)
    on_phone = ChatPage(open_page(phone, "/"))
    chat = ChatPage(open_page(page, "/"))
    chat.send("asked on the laptop")
    chat.wait_until_idle()
    link = on_phone.conversation_link("asked on the laptop")
    expect(link).to_be_visible(timeout=SYNC_WITHIN_MS)
    link.click()
    expect(on_phone.content(on_phone.last_reply())).to_have_text("Echo: asked on the laptop")


def test_an_open_conversation_takes_in_a_turn_made_on_another_device(
    page: Page, person: Person, other_browser: Callable[[], Page]
) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("first here")
    chat.wait_until_idle()
    phone = other_browser()
    log_in(phone.context, person.email)
    on_phone = ChatPage(open_page(phone, f"/#{conversation_id(page)}"))
    on_phone.send("then on the phone")
    on_phone.wait_until_idle()
    expect(chat.content(chat.last_reply())).to_have_text(
        "Echo: then on the phone", timeout=SYNC_WITHIN_MS
    )


def test_closing_the_page_mid_reply_lets_it_go_on_and_a_new_tab_follows_it_live(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    reply = Paced(fake)
    hangups = len(fake.disconnects)
    chat = ChatPage(open_page(page, "/"))
    chat.send("a long answer please")
    expect(chat.content(chat.last_reply())).to_have_text(reply.say(2))
    cid = conversation_id(page)
    context = page.context
    page.close()
    problems: list[str] = []
    again = watch(context.new_page(), problems)  # a new tab: it kept nothing of the reply
    # Once the server has saved what was said, the tab loads that, then replays the reply from
    # its start: the replay takes the saved text's place, it is not added to it.
    until(lambda: leaf_on_server(context, cid)["content"] == reply.shown, again)
    chat = ChatPage(open_page(again, f"/#{cid}"))
    content = chat.content(chat.last_reply())
    expect(chat.last_reply()).to_contain_text("Generating…")
    expect(content).to_have_text(reply.say(1))  # still going, live, read from its start
    expect(content).to_have_text(reply.finish())
    chat.wait_until_idle()
    assert content.inner_text() == reply.full
    saved = leaf_on_server(context, cid)
    assert (saved["content"], saved["status"]) == (reply.full, "complete")
    assert len(fake.disconnects) == hangups  # the upstream was never hung up on
    assert problems == []


def test_reloading_mid_reply_goes_on_with_it_live_in_place(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    reply = Paced(fake)
    asked = len(fake.chat_requests())
    chat = ChatPage(open_page(page, "/"))
    chat.send("tell me everything")
    content = chat.content(chat.last_reply())
    expect(content).to_have_text(reply.say(2))
    chat.reload()
    expect(content).to_have_text(reply.shown)  # what this tab had, at once, where it was
    expect(chat.last_reply()).to_contain_text("Generating…")
    expect(chat.stop_button).to_be_visible()
    expect(content).to_have_text(reply.say(1))  # live, word by word
    expect(content).to_have_text(reply.say(2))
    expect(content).to_have_text(reply.finish())
    chat.wait_until_idle()
    expect(chat.replies).to_have_count(1)
    expect(chat.content(chat.user_messages)).to_have_text(["tell me everything"])
    assert content.inner_text() == reply.full  # once: nothing said twice
    saved = leaf_on_server(page.context, conversation_id(page))
    assert (saved["content"], saved["status"]) == (reply.full, "complete")
    assert len(fake.chat_requests()) == asked + 1  # followed, never asked again


def test_a_write_against_an_old_revision_is_refused_and_the_page_takes_in_the_newer_one(
    page: Page, person: Person
) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("to be renamed")
    chat.wait_until_idle()
    cid = conversation_id(page)
    # The change feed is held back, so this page learns of the other change only by the refusal.
    page.route("**/api/conversations/changes*", lambda route: route.abort())
    elsewhere = page.context.request.post(
        f"/api/conversations/{cid}/messages", data={"content": "asked elsewhere", "client_id": "x1"}
    )
    assert elsewhere.ok and "Echo: asked elsewhere" in elsewhere.text()
    patches: list[int] = []

    def seen(response: Response) -> None:
        if response.request.method == "PATCH":
            patches.append(response.status)

    page.on("response", seen)
    chat.sidebar.get_by_role("button", name="Rename “to be renamed”").click()
    title = chat.sidebar.get_by_label("Conversation title")
    title.fill("renamed here")
    title.press("Enter")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: asked elsewhere")
    expect(chat.conversation_link("renamed here")).to_be_visible()
    until(lambda: len(patches) == 2, page)
    assert patches == [409, 200]  # refused, taken in, applied again
    assert on_server(page.context, f"/api/conversations/{cid}")["title"] == "renamed here"


def test_a_message_sent_offline_waits_visibly_and_goes_once_back_online(
    page: Page, person: Person
) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("before the tunnel")
    chat.wait_until_idle()
    page.context.set_offline(True)
    chat.send("written in the tunnel")
    expect(page.get_by_text("Not saved — retrying…")).to_be_visible()
    expect(chat.input).to_have_value("written in the tunnel")  # nothing typed is lost
    page.context.set_offline(False)
    expect(chat.content(chat.last_reply())).to_have_text("Echo: written in the tunnel")
    expect(page.get_by_text("Not saved — retrying…")).to_have_count(0)
    expect(chat.input).to_have_value("")
    saved = on_server(page.context, f"/api/conversations/{conversation_id(page)}")["messages"]
    questions = [m["content"] for m in saved if m["role"] == "user"]
    assert questions == ["before the tunnel", "written in the tunnel"]


def test_a_message_sent_offline_survives_a_reload_in_the_composer(
    page: Page, person: Person
) -> None:
    chat = ChatPage(open_page(page, "/"))
    page.context.set_offline(True)
    chat.send("do not lose me")
    expect(page.get_by_text("Not saved — retrying…")).to_be_visible()
    page.route("**/api/conversations*", lambda route: route.abort())  # still unreachable
    page.context.set_offline(False)
    chat.reload()
    page.unroute("**/api/conversations*")
    expect(chat.input).to_have_value("do not lose me")


def seed_browser(page: Page, owner: int, stored: list[dict[str, Any]]) -> None:
    """Conversations this browser kept for `owner` before they moved to the server."""
    page.evaluate(
        """([owner, stored]) => {
             const prefix = `quartchat.v1.u${owner}.`;
             for (const c of stored) localStorage.setItem(prefix + 'c.' + c.id, JSON.stringify(c));
           }""",
        [owner, stored],
    )


def test_the_browser_s_conversations_are_imported_once_even_from_two_tabs_at_once(
    page: Page, person: Person
) -> None:
    open_page(page, "/login")
    kept = [
        conversation("kept in this browser", [("old question", "old answer")], cid="kept1"),
        conversation("also kept", [("another", "answer")], cid="kept2", updated=2),
    ]
    seed_browser(page, person.id, kept)
    problems: list[str] = []
    second = watch(page.context.new_page(), problems)
    page.goto("/", wait_until="commit")
    second.goto("/", wait_until="commit")
    for tab in (page, second):
        chat = ChatPage(tab)
        expect(tab.locator("body[data-ready]")).to_be_attached()
        expect(chat.conversation_link("kept in this browser")).to_be_visible()
    ChatPage(page).conversation_link("kept in this browser").click()
    expect(ChatPage(page).content(ChatPage(page).last_reply())).to_have_text("old answer")
    ChatPage(page).reload()
    expect(ChatPage(page).conversation_link("also kept")).to_be_visible()
    assert sorted(titles_on_server(page.context)) == ["also kept", "kept in this browser"]
    marked = page.evaluate(f"localStorage.getItem('quartchat.v1.u{person.id}.imported')")
    assert sorted(json.loads(marked)) == ["kept1", "kept2"]
    still = page.evaluate(f"localStorage.getItem('quartchat.v1.u{person.id}.c.kept1') !== null")
    assert still  # kept in the browser too, not deleted behind the person's back
    second.close()
    assert problems == []


def test_another_person_s_conversation_in_the_address_is_not_found(
    page: Page, admin_api: AdminAPI, other_browser: Callable[[], Page]
) -> None:
    ann = admin_api.new_user("ann")
    log_in(page.context, ann.email)
    chat = ChatPage(open_page(page, "/"))
    chat.send("ann's secret plan")
    chat.wait_until_idle()
    cid = conversation_id(page)
    bobs = other_browser()
    log_in(bobs.context, admin_api.new_user("bob").email)
    bob = ChatPage(open_page(bobs, f"/#{cid}"))
    expect(bobs.get_by_text("That conversation was not found.")).to_be_visible()
    expect(bob.messages).to_have_count(0)
    assert "secret plan" not in bobs.content()
    assert conversation_id(bobs) == ""


def test_a_deleted_conversation_comes_back_with_undo(page: Page, person: Person) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("keep me after all")
    chat.wait_until_idle()
    chat.sidebar.get_by_role("button", name="Delete “keep me after all”").click()
    expect(chat.conversation_link("keep me after all")).to_have_count(0)
    until(lambda: titles_on_server(page.context) == [], page)
    page.get_by_role("button", name="Undo").click()
    expect(chat.conversation_link("keep me after all")).to_be_visible()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: keep me after all")
    assert titles_on_server(page.context) == ["keep me after all"]


def test_regenerating_and_switching_versions_are_kept_by_the_server(
    page: Page, person: Person, fake: FakeUpstream
) -> None:
    fake.reply_with(
        Reply(chunks=completion_chunks(["First", " try"])),
        Reply(chunks=completion_chunks(["Second", " try"])),
    )
    chat = ChatPage(open_page(page, "/"))
    chat.send("a question")
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.wait_until_idle()
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    chat.wait_until_idle()
    chat.last_reply().get_by_role("button", name="Previous version").click()
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    cid = conversation_id(page)

    until(lambda: leaf_on_server(page.context, cid)["content"] == "First try", page)
    chat.reload()  # the version shown is the server's
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.send("and then?")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: and then?")
    assert fake.chat_requests()[-1].json["messages"] == [
        {"role": "user", "content": "a question"},
        {"role": "assistant", "content": "First try"},
        {"role": "user", "content": "and then?"},
    ]


def test_an_edited_question_is_a_new_version_on_the_server(page: Page, person: Person) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("first question")
    chat.wait_until_idle()
    chat.edit(chat.user_messages.first, "changed question")
    expect(chat.messages.locator(".content")).to_have_text(
        ["changed question", "Echo: changed question"]
    )
    chat.wait_until_idle()
    chat.reload()
    expect(chat.messages.locator(".content")).to_have_text(
        ["changed question", "Echo: changed question"]
    )
    expect(chat.user_messages.first.get_by_role("group", name="Versions")).to_contain_text(
        "Version 2 of 2"
    )
    saved = on_server(page.context, f"/api/conversations/{conversation_id(page)}")["messages"]
    assert sorted(m["content"] for m in saved if m["role"] == "user") == [
        "changed question",
        "first question",
    ]


def test_an_import_keeps_its_dates_and_my_own_export_imports_again_as_nothing(
    page: Page, person: Person
) -> None:
    chat = ChatPage(open_page(page, "/"))
    chat.send("current work")
    chat.wait_until_idle()
    document = {
        "format": "quartchat",
        "version": 1,
        "conversations": [old_conversation("old", "old chat", 1_700_000_000_000)],
    }
    open_transfer(page)
    import_file(page, "old.json", json.dumps(document).encode())
    status = page.get_by_role("dialog").get_by_role("status")
    expect(status).to_have_text("Imported 1 conversation.")
    import_file(page, "old.json", json.dumps(document).encode())
    expect(status).to_have_text(
        "Imported 0 conversations. 1 conversation was imported before and skipped."
    )
    name, text = download(page, "JSON of all conversations")
    import_file(page, name, text.encode())
    expect(status).to_have_text(
        "Imported 0 conversations. 2 conversations were imported before and skipped."
    )
    page.get_by_role("button", name="Done").click()
    expect(chat.sidebar.get_by_role("link")).to_have_text(["current work", "old chat"])
    assert titles_on_server(page.context) == ["current work", "old chat"]
    (old,) = [c for c in json.loads(text)["conversations"] if c["title"] == "old chat"]
    assert old["updatedAt"] == 1_700_000_000_000
    (reply,) = [m for m in old["messages"] if m["role"] == "assistant"]
    assert (reply["usage"]["total_tokens"], reply["finishReason"]) == (12, "stop")


def test_renaming_and_undoing_a_delete_keep_the_sidebar_s_order(page: Page, person: Person) -> None:
    chat = ChatPage(open_page(page, "/"))
    for first_words in ("oldest", "middle", "newest"):
        page.get_by_role("button", name="New Chat").click()
        chat.send(first_words)
        chat.wait_until_idle()
    order = chat.sidebar.get_by_role("link")
    expect(order).to_have_text(["newest", "middle", "oldest"])
    chat.sidebar.get_by_role("button", name="Rename “oldest”").click()
    title = chat.sidebar.get_by_label("Conversation title")
    title.fill("oldest, renamed")
    title.press("Enter")
    # Once the server has the new title (and the page its answer), the order is still the same.
    until(lambda: "oldest, renamed" in titles_on_server(page.context), page)
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
    chat.sidebar.get_by_role("button", name="Delete “middle”").click()
    until(lambda: len(titles_on_server(page.context)) == 2, page)
    page.get_by_role("button", name="Undo").click()
    until(lambda: len(titles_on_server(page.context)) == 3, page)
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
    chat.reload()
    expect(order).to_have_text(["newest", "middle", "oldest, renamed"])
    assert titles_on_server(page.context) == ["newest", "middle", "oldest, renamed"]
