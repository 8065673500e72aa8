"""Export (one conversation or all, JSON or Markdown) and import (our JSON and ChatGPT's
conversations.json): versions survive the round trip, and a hostile file stays inert data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Dialog, FilePayload, Page, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, needs_chromium

pytestmark = needs_chromium

IMPORT_LABEL = "A quartchat JSON export, or ChatGPT's conversations.json"


def node(
    key: str,
    role: str | None,
    parts: list[Any],
    parent: str | None,
    at: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    message = None
    if role is not None:
        message = {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": at,
            "content": {"content_type": "text", "parts": parts},
            "status": "finished_successfully",
            "recipient": "all",
            "metadata": {},
            **extra,
        }
    return {"id": key, "message": message, "parent": parent, "children": []}


def chatgpt_export() -> list[Any]:
    """ChatGPT's conversations.json, trimmed to what matters: a tree with a regenerated reply,
    a hidden system node, an image part, and entries that are not conversations at all."""
    t = 1_700_000_000.0
    mapping = {
        "root": node("root", None, [], None),
        "sys": node("sys", "system", [""], "root", None),
        "u1": node("u1", "user", ["What is 2+2?"], "sys", t + 1),
        "a1": node("a1", "assistant", ["4"], "u1", t + 2),
        "a2": node("a2", "assistant", ["Four."], "u1", t + 3),
        "u2": node(
            "u2",
            "user",
            [{"content_type": "image_asset_pointer"}, "And this picture?"],
            "a2",
            t + 4,
        ),
        "tool": node("tool", "tool", ["search results"], "u2", t + 5),
        "a3": node("a3", "assistant", ["A cat."], "tool", t + 6),
    }
    mapping["sys"]["message"]["metadata"] = {"is_visually_hidden_from_conversation": True}
    return [
        {
            "title": "Arithmetic",
            "create_time": t,
            "update_time": t + 6,
            "mapping": mapping,
            "current_node": "a3",
            "id": "abc-123",
        },
        42,
        {"title": "no mapping", "mapping": 5},
    ]


# A conversation built to attack the importer: keys that would pollute prototypes if merged into
# objects, markup in the title, script and javascript: links in a reply, a part that is no text.
HOSTILE = """[{"title": "<img src=x onerror=alert(1)>", "create_time": 1700000000,
  "mapping": {
    "__proto__": {"message": {"author": {"role": "user"}, "content": {"parts": ["polluted?"]},
                              "create_time": 1700000001}, "parent": null},
    "n1": {"message": {"author": {"role": "assistant", "__proto__": {"polluted": true}},
                       "content": {"parts": ["[click me](javascript:alert(1)) <script>alert(1)</script> <img src=x onerror=alert(2)>"],
                                   "__proto__": {"polluted": true}},
                       "create_time": 1700000002}, "parent": "__proto__"},
    "constructor": {"message": {"author": {"role": "user"}, "content": {"parts": [{"x": 1}]}}, "parent": null}
  },
  "current_node": "n1"}]"""


def open_transfer(page: Page) -> None:
    page.get_by_role("button", name="Import / export").click()
    expect(page.get_by_role("dialog", name="Import and export")).to_be_visible()


def import_file(page: Page, name: str, data: bytes) -> None:
    payload: FilePayload = {"name": name, "mimeType": "application/json", "buffer": data}
    page.get_by_label(IMPORT_LABEL).set_input_files(files=[payload])


def download(page: Page, button: str) -> tuple[str, str]:
    with page.expect_download() as event:
        page.get_by_role("dialog").get_by_role("button", name=button).click()
    return event.value.suggested_filename, Path(event.value.path()).read_text()


def with_two_versions(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(
        Reply(chunks=completion_chunks(["First", " try"])),
        Reply(chunks=completion_chunks(["Second", " try"])),
    )
    chat.send("a question")
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.wait_until_idle()
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    chat.wait_until_idle()


def test_a_conversation_exports_as_json_with_its_versions_and_as_markdown(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    with_two_versions(chat, fake)
    open_transfer(chat.page)
    name, text = download(chat.page, "JSON of this conversation")
    assert name == "a-question.json"
    exported = json.loads(text)
    assert exported["format"] == "quartchat" and exported["version"] == 1
    (conversation,) = exported["conversations"]
    assert conversation["title"] == "a question"
    question, first, second = conversation["messages"]
    assert [m["content"] for m in (question, first, second)] == [
        "a question",
        "First try",
        "Second try",
    ]
    assert first["parentId"] == second["parentId"] == question["id"]
    assert conversation["leafId"] == second["id"]
    name, markdown = download(chat.page, "Markdown of this conversation")
    assert name == "a-question.md"
    assert markdown == "# a question\n\n**You:**\n\na question\n\n**Assistant:**\n\nSecond try\n"
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_contain_text(
        "Exported 1 conversation"
    )


def test_everything_exports_and_imports_again_with_versions(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    with_two_versions(chat, fake)
    chat.page.get_by_role("button", name="New Chat").click()
    chat.send("another one")
    chat.wait_until_idle()
    open_transfer(chat.page)
    name, text = download(chat.page, "JSON of all conversations")
    assert name == "quartchat-conversations.json"
    assert [c["title"] for c in json.loads(text)["conversations"]] == ["another one", "a question"]
    _, markdown = download(chat.page, "Markdown of all conversations")
    assert "# another one" in markdown and "# a question" in markdown
    chat.page.get_by_role("button", name="Done").click()
    for title in ("another one", "a question"):
        chat.sidebar.get_by_role("button", name=f"Delete “{title}”").click()
    expect(chat.sidebar.get_by_role("link")).to_have_count(0)
    open_transfer(chat.page)
    import_file(chat.page, name, text.encode())
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_have_text(
        "Imported 2 conversations."
    )
    import_file(chat.page, name, text.encode())  # twice: skipped, nothing overwritten
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_have_text(
        "Imported 0 conversations. 2 conversations were imported before and skipped."
    )
    chat.page.get_by_role("button", name="Done").click()
    expect(chat.sidebar.get_by_role("link")).to_have_count(2)
    chat.conversation_link("a question").first.click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    chat.last_reply().get_by_role("button", name="Previous version").click()
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    assert {c["id"] for c in chat.stored()} == {c["id"] for c in json.loads(text)["conversations"]}


def test_chatgpt_s_export_imports_with_its_branches(chat: ChatPage) -> None:
    open_transfer(chat.page)
    import_file(chat.page, "conversations.json", json.dumps(chatgpt_export()).encode())
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_have_text(
        "Imported 1 conversation. 3 items could not be read and were skipped."
    )
    chat.page.get_by_role("button", name="Done").click()
    chat.conversation_link("Arithmetic").click()
    expect(chat.messages.locator(".content")).to_have_text(
        ["What is 2+2?", "Four.", "And this picture?", "A cat."]
    )
    four = chat.replies.first
    expect(four.get_by_role("group", name="Versions")).to_contain_text("Version 2 of 2")
    four.get_by_role("button", name="Previous version").click()
    expect(chat.messages.locator(".content")).to_have_text(["What is 2+2?", "4"])


def test_a_hostile_conversations_json_stays_inert(chat: ChatPage) -> None:
    dialogs: list[str] = []

    def dialog(opened: Dialog) -> None:
        dialogs.append(opened.message)
        opened.dismiss()

    chat.page.on("dialog", dialog)
    open_transfer(chat.page)
    import_file(chat.page, "conversations.json", HOSTILE.encode())
    expect(chat.page.get_by_role("dialog").get_by_role("status")).to_have_text(
        "Imported 1 conversation. 1 item could not be read and was skipped."
    )
    chat.page.get_by_role("button", name="Done").click()
    link = chat.conversation_link("<img src=x onerror=alert(1)>")  # a title, as text
    link.click()
    expect(chat.messages.locator(".content").first).to_have_text("polluted?")
    reply = chat.content(chat.last_reply())
    expect(reply).to_contain_text("<script>alert(1)</script>")  # shown, not run
    assert reply.locator("script, img, [onerror]").count() == 0
    assert reply.locator("a[href^='javascript']").count() == 0
    chat.page.get_by_text("click me").click()
    assert chat.page.evaluate(
        "({}).polluted === undefined && Object.prototype.polluted === undefined"
    )
    (stored,) = chat.stored()
    assert "__proto__" not in json.dumps(stored)
    assert dialogs == []


def test_files_over_50_mb_and_files_that_are_not_json_are_refused(chat: ChatPage) -> None:
    open_transfer(chat.page)
    chat.page.evaluate(
        """() => { const input = document.getElementById('import-file');
                   const files = new DataTransfer();
                   files.items.add(new File([new Uint8Array(51 * 1024 * 1024)], 'big.json'));
                   input.files = files.files;
                   input.dispatchEvent(new Event('change')); }"""
    )
    status = chat.page.get_by_role("dialog").get_by_role("status")
    expect(status).to_have_text("That file is 51 MB; files up to 50 MB can be imported.")
    import_file(chat.page, "notes.json", b"<html>not json</html>")
    expect(status).to_have_text("Imported 0 conversations. The file is not JSON.")
    import_file(chat.page, "other.json", b'{"format": "quartchat", "version": 9}')
    expect(status).to_contain_text("version 1 is read")
    assert chat.stored() == []


def old_conversation(cid: str, title: str, at: int) -> dict[str, Any]:
    """A conversation of our format last used at `at` (milliseconds), with a reply's usage."""
    return {
        "id": cid,
        "title": title,
        "createdAt": at - 60_000,
        "updatedAt": at,
        "settings": {},
        "leafId": f"{cid}-a",
        "messages": [
            {"id": f"{cid}-u", "parentId": None, "role": "user", "content": "hi", "createdAt": at},
            {
                "id": f"{cid}-a",
                "parentId": f"{cid}-u",
                "role": "assistant",
                "content": "hello",
                "status": "done",
                "createdAt": at,
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                "finishReason": "stop",
            },
        ],
    }


def test_an_import_keeps_its_dates_below_current_work_and_is_skipped_the_second_time(
    chat: ChatPage,
) -> None:
    chat.send("current work")
    chat.wait_until_idle()
    document = {
        "format": "quartchat",
        "version": 1,
        "conversations": [
            old_conversation("older", "older chat", 1_600_000_000_000),
            old_conversation("old", "old chat", 1_700_000_000_000),
        ],
    }
    open_transfer(chat.page)
    import_file(chat.page, "old.json", json.dumps(document).encode())
    status = chat.page.get_by_role("dialog").get_by_role("status")
    expect(status).to_have_text("Imported 2 conversations.")
    import_file(chat.page, "conversations.json", json.dumps(chatgpt_export()).encode())
    import_file(chat.page, "conversations.json", json.dumps(chatgpt_export()).encode())
    expect(status).to_have_text(
        "Imported 0 conversations. 1 conversation was imported before and skipped."
        " 3 items could not be read and were skipped."
    )
    chat.page.get_by_role("button", name="Done").click()
    # Arithmetic was last used on 14 November 2023: between the two.
    expect(chat.sidebar.get_by_role("link")).to_have_text(
        ["current work", "Arithmetic", "old chat", "older chat"]
    )
    (old,) = [c for c in chat.stored() if c["title"] == "old chat"]
    assert old["updatedAt"] == 1_700_000_000_000
    (reply,) = [m for m in old["messages"] if m["role"] == "assistant"]
    assert (reply["usage"]["total_tokens"], reply["finishReason"]) == (12, "stop")
