"""Sending, streaming, stopping, regenerating, editing and copying messages; errors and drops."""

from __future__ import annotations

import threading

import pytest
from playwright.sync_api import Browser, Page, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from ..service import Service
from .browser import ChatPage, conversation, needs_chromium

pytestmark = needs_chromium


def partial_then_hang(*words: str) -> Reply:
    """A reply that sends `words`, then keeps the stream open without finishing."""
    return Reply(chunks=completion_chunks(list(words))[: 1 + len(words)], hang=True)


def test_reply_streams_in_step_by_step(chat: ChatPage, fake: FakeUpstream) -> None:
    words = ["One", " two", " three", " four", " five", " six"]
    step = threading.Semaphore(0)
    fake.reply_with(Reply(chunks=completion_chunks(words), step=step))
    chat.send("count to six")
    reply = chat.content(chat.last_reply())
    for i in range(len(words)):
        step.release()  # the upstream sends one more word, and the page shows it before the end
        expect(reply).to_have_text("".join(words[: i + 1]))
        expect(chat.last_reply()).to_have_attribute("aria-busy", "true")
    step.release(3)  # finish reason, usage, [DONE]
    expect(chat.last_reply()).to_have_attribute("aria-busy", "false")
    expect(reply).to_have_text("One two three four five six")


def test_a_streaming_reply_shows_a_generating_state_and_ends_with_token_usage(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["Hello", " there"]), delay=0.2))
    chat.send("hi")
    expect(chat.last_reply()).to_have_attribute("aria-busy", "true")
    expect(chat.last_reply()).to_contain_text("Generating")
    expect(chat.stop_button).to_be_visible()
    expect(chat.last_reply().locator(".usage")).to_have_text("5 prompt + 2 reply tokens")
    expect(chat.last_reply()).to_have_attribute("aria-busy", "false")
    expect(chat.last_reply()).not_to_contain_text("Generating")
    expect(chat.send_button).to_be_visible()


def test_enter_sends_and_shift_enter_starts_a_new_line_in_a_growing_box(chat: ChatPage) -> None:
    height = chat.input.bounding_box()["height"]  # type: ignore[index]
    chat.input.type("line one")
    chat.input.press("Shift+Enter")
    chat.input.type("line two")
    chat.input.press("Shift+Enter")
    chat.input.type("line three")
    assert chat.input.bounding_box()["height"] > height  # type: ignore[index]
    expect(chat.messages).to_have_count(0)
    chat.input.press("Enter")
    expect(chat.content(chat.user_messages.last)).to_have_text("line one\nline two\nline three")
    expect(chat.input).to_have_value("")


def test_stop_keeps_the_partial_reply_and_the_server_cancels_upstream(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    hangups = len(fake.disconnects)
    fake.reply_with(partial_then_hang("Partial", " answer"))
    chat.send("tell me a long story")
    expect(chat.content(chat.last_reply())).to_have_text("Partial answer")
    chat.stop_button.click()
    expect(chat.last_reply().locator(".status")).to_have_text("Stopped")
    expect(chat.content(chat.last_reply())).to_have_text("Partial answer")
    expect(chat.send_button).to_be_visible()
    assert fake.wait_for_disconnects(hangups + 1, timeout=10)
    chat.reload()
    expect(chat.content(chat.last_reply())).to_have_text("Partial answer")
    expect(chat.last_reply().locator(".status")).to_have_text("Stopped")


def test_escape_stops_a_reply_too(chat: ChatPage, fake: FakeUpstream) -> None:
    hangups = len(fake.disconnects)
    fake.reply_with(partial_then_hang("Some"))
    chat.send("go on")
    expect(chat.content(chat.last_reply())).to_have_text("Some")
    chat.input.press("Escape")
    expect(chat.last_reply().locator(".status")).to_have_text("Stopped")
    assert fake.wait_for_disconnects(hangups + 1, timeout=10)


def test_regenerate_replaces_the_last_reply(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(
        Reply(chunks=completion_chunks(["First", " try"])),
        Reply(chunks=completion_chunks(["Second", " try"])),
    )
    chat.send("a question")
    expect(chat.content(chat.last_reply())).to_have_text("First try")
    chat.last_reply().get_by_role("button", name="Regenerate reply").click()
    expect(chat.content(chat.last_reply())).to_have_text("Second try")
    expect(chat.replies).to_have_count(1)
    sent = fake.chat_requests()[-1].json["messages"]
    assert sent == [{"role": "user", "content": "a question"}]  # the old reply was not sent back


def test_edit_an_earlier_message_and_resend_from_there(chat: ChatPage, fake: FakeUpstream) -> None:
    chat.send("first question")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: first question")
    chat.send("second question")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: second question")
    chat.edit(chat.user_messages.first, "changed question")
    expect(chat.messages.locator(".content")).to_have_text(
        ["changed question", "Echo: changed question"]
    )
    sent = fake.chat_requests()[-1].json["messages"]
    assert sent == [{"role": "user", "content": "changed question"}]


@pytest.fixture
def context_options() -> dict[str, object]:
    return {"permissions": ["clipboard-read", "clipboard-write"]}


def test_copy_puts_a_message_on_the_clipboard(chat: ChatPage) -> None:
    chat.send("copy this")
    expect(chat.content(chat.last_reply())).to_have_text("Echo: copy this")
    chat.last_reply().get_by_role("button", name="Copy message").click()
    expect(chat.last_reply().get_by_role("button", name="Copied")).to_be_visible()
    assert chat.page.evaluate("navigator.clipboard.readText()") == "Echo: copy this"


def test_an_upstream_error_shows_inline_and_retry_gets_the_reply(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    fake.reply_with(Reply(status=429, chunks=[b'{"error": {"message": "quota"}}'], headers={}))
    chat.send("too much")
    error = chat.last_reply().locator(".error-box")
    expect(error).to_contain_text("rate limit")
    expect(error).to_contain_text("UPSTREAM_RATE_LIMITED")
    error.get_by_role("button", name="Retry").click()
    expect(chat.content(chat.last_reply())).to_have_text("Echo: too much")
    expect(chat.page.locator(".error-box")).to_have_count(0)
    expect(chat.replies).to_have_count(1)


def test_an_error_mid_stream_keeps_the_partial_text(chat: ChatPage, fake: FakeUpstream) -> None:
    fake.reply_with(Reply(chunks=completion_chunks(["Half", " of it"])[:3], cut=True))
    chat.send("break please")
    expect(chat.content(chat.last_reply())).to_have_text("Half of it")
    expect(chat.last_reply().locator(".error-box")).to_contain_text("UPSTREAM_ERROR")
    expect(chat.last_reply().get_by_role("button", name="Retry")).to_be_visible()


def test_a_network_drop_mid_stream_keeps_the_partial_text_and_says_so(
    browser: Browser, fake: FakeUpstream
) -> None:
    with Service(fake.url) as doomed:  # its own server, to be killed mid-reply
        context = browser.new_context(base_url=doomed.url)
        chat = ChatPage(context.new_page()).open()
        fake.reply_with(partial_then_hang("Before", " the", " drop"))
        chat.send("hello")
        expect(chat.content(chat.last_reply())).to_have_text("Before the drop")
        assert doomed.process is not None
        doomed.process.kill()
        error = chat.last_reply().locator(".error-box")
        expect(error).to_contain_text("The connection dropped before the reply finished")
        expect(error).to_contain_text("The text above is what arrived")
        expect(chat.content(chat.last_reply())).to_have_text("Before the drop")
        context.close()


@pytest.fixture
def small_window(page: Page) -> None:
    page.set_viewport_size({"width": 900, "height": 500})


def at_bottom(page: Page) -> bool:
    return bool(
        page.evaluate(
            "(() => { const s = document.getElementById('scroller');"
            " return s.scrollHeight - s.scrollTop - s.clientHeight <= 48; })()"
        )
    )


def test_auto_scroll_follows_until_the_user_scrolls_up_then_jump_to_latest(
    chat: ChatPage, fake: FakeUpstream, small_window: None
) -> None:
    chat.seed(conversation("Earlier", [("earlier question", "earlier answer\n\n" * 10)]))
    chat.page.goto("/#seeded")
    lines = [f"Line {i}\n\n" for i in range(60)]
    fake.reply_with(Reply(chunks=completion_chunks(lines)[:61], delay=0.04, hang=True))
    chat.send("a long answer please")
    expect(chat.last_reply()).to_contain_text("Line 15")
    assert at_bottom(chat.page)  # it followed the stream so far
    chat.page.locator("#scroller").hover()
    chat.page.mouse.wheel(0, -400)
    jump = chat.page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    top = chat.page.evaluate("document.getElementById('scroller').scrollTop")
    expect(chat.last_reply()).to_contain_text("Line 30")  # more text arrived ...
    assert (
        chat.page.evaluate("document.getElementById('scroller').scrollTop") == top
    )  # ... in place
    jump.click()
    expect(jump).to_be_hidden()
    expect(chat.last_reply()).to_contain_text("Line 45")
    assert at_bottom(chat.page)  # following again
    chat.stop_button.click()


def test_the_page_s_event_parser_gives_each_event_the_id_to_resume_from(chat: ChatPage) -> None:
    # The server's store keeps the last id heard and echoes it to resume a reply (runs): an event
    # without an id line inherits the last one (as EventSource does), and a ping has none.
    events = chat.page.evaluate(
        """async () => {
          const { SSEParser } = await import('/static/api.js');
          const parser = new SSEParser();
          return [
            ...parser.push('id: 5\\nevent: chunk\\ndata: {"delta": "Hello"}\\n\\n: ping\\n\\nev'),
            ...parser.push('ent: chunk\\ndata: {}\\n\\nid: 5.end\\nevent: done\\ndata: {}\\n\\n'),
          ];
        }"""
    )
    assert [(e["event"], e["id"]) for e in events] == [
        ("chunk", "5"),
        ("chunk", "5"),
        ("done", "5.end"),
    ]
