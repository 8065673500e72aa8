"""Versions: regenerating a reply or editing a question keeps the old one, a "2/3" away;
messages form a tree (older, flat conversations become one on the way in), and only the path
shown is sent upstream. Also: long pasted text folds, and each message says when it was sent."""

from __future__ import annotations

from playwright.sync_api import Locator, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, ask, conversation, needs_chromium

pytestmark = needs_chromium


def version(message: Locator) -> Locator:
    return message.get_by_role("group", name="Versions")


def test_regenerate_keeps_the_old_reply_as_a_version(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(
        Reply(chunks=completion_chunks(["First", " try"])),
        Reply(chunks=completion_chunks(["Second", " try"])),
        Reply(chunks=completion_chunks(["Third", " try"])),
    )
    chat.send("a question")
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    chat.wait_until_idle()
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Third try")
    chat.wait_until_idle()
    expect(version(chat.last_reply())).to_contain_text("Version 3 of 3")
    expect(version(chat.last_reply()).locator(".version-count")).to_have_text("3/3")
    expect(chat.replies).to_have_count(1)
    chat.last_reply().get_by_role("button", name="Previous version").click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    expect(version(chat.last_reply())).to_contain_text("Version 2 of 3")
    expect(chat.last_reply().get_by_role("button", name="Previous version")).to_be_focused()
    chat.last_reply().get_by_role("button", name="Previous version").click()
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    expect(chat.last_reply().get_by_role("button", name="Previous version")).to_be_disabled()
    chat.reload()  # the version shown is kept
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.send("and then?")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: and then?")
    # Only the path shown goes upstream.
    assert fake.chat_requests()[-1].json["messages"] == [
        {"role": "user", "content": "a question"},
        {"role": "assistant", "content": "First try"},
        {"role": "user", "content": "and then?"},
    ]


def test_editing_a_question_keeps_the_old_one_and_what_followed_it(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    ask(chat, "first question")
    ask(chat, "second question")
    chat.edit(chat.user_messages.first, "changed question")
    expect(chat.messages.locator(".content")).to_have_text(
        ["changed question", "Echo: changed question"]
    )
    assert fake.chat_requests()[-1].json["messages"] == [
        {"role": "user", "content": "changed question"}
    ]
    chat.wait_until_idle()
    expect(version(chat.user_messages.first)).to_contain_text("Version 2 of 2")
    chat.user_messages.first.get_by_role("button", name="Previous version").click()
    expect(chat.messages.locator(".content")).to_have_text(
        ["first question", "Echo: first question", "second question", "Echo: second question"]
    )
    chat.user_messages.first.get_by_role("button", name="Next version").click()
    expect(chat.messages.locator(".content")).to_have_text(
        ["changed question", "Echo: changed question"]
    )
    (stored,) = chat.stored()
    assert len(stored["messages"]) == 6  # nothing was dropped


def test_a_conversation_saved_before_versions_becomes_a_tree(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    # The page's first layout: a flat list of messages, no parentId, no leafId, no revision.
    flat = conversation("Flat", [("q1", "a1"), ("q2", "a2")], cid="flat")
    chat.page.evaluate(
        """(c) => { localStorage.setItem('quartchat.v1.c.flat', JSON.stringify(c));
                    localStorage.setItem('quartchat.v1.index', JSON.stringify([
                      {id: c.id, title: c.title, updatedAt: c.updatedAt}])); }""",
        flat,
    )
    chat.open("/#flat")
    expect(chat.messages.locator(".content")).to_have_text(["q1", "a1", "q2", "a2"])
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: q2")
    chat.wait_until_idle()
    (stored,) = chat.stored()
    parents = {m["id"]: m["parentId"] for m in stored["messages"]}
    assert parents["flat-u0"] is None
    assert parents["flat-a0"] == "flat-u0"
    assert parents["flat-a1"] == "flat-u1"
    assert parents[stored["leafId"]] == "flat-u1"  # the new reply, beside a2
    assert len(stored["messages"]) == 5


def test_long_pasted_text_folds_behind_show_all(chat: ChatPage) -> None:
    pasted = "\n".join(f"line {i}" for i in range(80))
    chat.send(pasted)
    chat.wait_until_idle()
    question = chat.user_messages.last
    show_all = question.get_by_role("button", name="Show all")
    expect(show_all).to_have_attribute("aria-expanded", "false")
    height = question.locator(".bubble").bounding_box()["height"]  # type: ignore[index]
    show_all.click()
    expect(question.get_by_role("button", name="Show less")).to_have_attribute(
        "aria-expanded", "true"
    )
    assert question.locator(".bubble").bounding_box()["height"] > 2 * height  # type: ignore[index]
    chat.send("a short one")  # short questions and replies do not fold
    chat.wait_until_idle()
    expect(chat.page.get_by_role("button", name="Show all")).to_have_count(0)
    expect(chat.page.get_by_role("button", name="Show less")).to_have_count(1)


def test_each_message_says_when_it_was_sent_on_hover(chat: ChatPage) -> None:
    chat.send("what time is it?")
    chat.wait_until_idle()
    question = chat.user_messages.last
    question.hover()
    when = question.locator("time")
    expect(when).to_be_visible()
    iso = when.get_attribute("datetime")
    assert iso is not None and iso.endswith("Z")
    assert chat.page.evaluate("(iso) => Math.abs(Date.now() - Date.parse(iso)) < 60000", iso)
    assert len(str(when.get_attribute("title"))) > len(when.inner_text())  # the whole date
    expect(chat.last_reply().locator("time")).to_have_count(1)
