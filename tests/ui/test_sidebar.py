"""The sidebar at scale: paged in from the store as it scrolls (search results too), and never
drawn again as a whole: a save touches its own item, a switch the two whose mark changes."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from ..fake_upstream import FakeUpstream, Reply, completion_chunks
from .browser import ChatPage, needs_chromium, seed_many

pytestmark = needs_chromium

# Which sidebar items (by conversation id) anything under them changed, from now on.
WATCH_SIDEBAR = """() => { window.touched = new Set();
  const list = document.getElementById('conversations');
  new MutationObserver((records) => { for (const r of records) {
      const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const item = node.closest('li[data-id]');
      if (item) window.touched.add(item.dataset.id);
      for (const n of [...r.addedNodes, ...r.removedNodes]) if (n.dataset?.id) window.touched.add(n.dataset.id);
  } }).observe(list, {subtree: true, childList: true, characterData: true, attributes: true}); }"""


def touched(page: Page) -> set[str]:
    return set(page.evaluate("[...window.touched]"))


def scroll_list_to_end(page: Page) -> None:
    page.locator("#conversations").evaluate("(list) => { list.scrollTop = list.scrollHeight; }")


def test_a_thousand_conversations_are_listed_a_page_at_a_time(chat: ChatPage) -> None:
    seed_many(chat.page, 1000)
    chat.reload()
    links = chat.sidebar.get_by_role("link")
    expect(links).to_have_count(50)
    expect(links.first).to_have_text("Conversation 999")  # newest first
    scroll_list_to_end(chat.page)
    expect(links).to_have_count(100)
    expect(links.nth(99)).to_have_text("Conversation 900")
    chat.conversation_link("Conversation 950").click()  # what is listed opens
    expect(chat.messages.locator(".content").first).to_have_text("Question 0 of 950")


def test_a_streaming_reply_touches_only_its_own_sidebar_item(
    chat: ChatPage, fake: FakeUpstream
) -> None:
    seed_many(chat.page, 300)
    chat.reload()
    chat.open("/#c00290")
    expect(chat.conversation_link("Conversation 290")).to_have_attribute("aria-current", "page")
    chat.page.evaluate(WATCH_SIDEBAR)
    words = [f"word{i} " for i in range(30)]
    fake.reply_with(Reply(chunks=completion_chunks(words), delay=0.08))  # ~2.5 s: saved each second
    chat.send("one more")
    expect(chat.content(chat.last_reply())).to_have_text("".join(words).strip())
    chat.wait_until_idle()
    assert touched(chat.page) == {"c00290"}  # moved to the top; no other item drawn again
    expect(chat.sidebar.get_by_role("link").first).to_have_text("Conversation 290")


def test_switching_conversations_changes_only_the_two_marked_items(chat: ChatPage) -> None:
    seed_many(chat.page, 300)
    chat.reload()
    chat.open("/#c00295")
    expect(chat.conversation_link("Conversation 295")).to_have_attribute("aria-current", "page")
    chat.page.evaluate(WATCH_SIDEBAR)
    chat.conversation_link("Conversation 280").click()
    expect(chat.conversation_link("Conversation 280")).to_have_attribute("aria-current", "page")
    expect(chat.messages.locator(".content").first).to_have_text("Question 0 of 280")
    assert touched(chat.page) == {"c00295", "c00280"}
    expect(chat.conversation_link("Conversation 295")).not_to_have_attribute("aria-current", "page")


def test_search_results_are_paged_too(chat: ChatPage) -> None:
    seed_many(chat.page, 400, needle="zebra", every=3)  # 134 conversations say it
    chat.reload()
    chat.page.get_by_label("Search conversations").fill("ZEBRA")
    links = chat.sidebar.get_by_role("link")
    expect(links.nth(1)).to_have_text("Conversation 396")  # the results are shown
    expect(links).to_have_count(50)
    expect(links.first).to_have_text("Conversation 399")
    scroll_list_to_end(chat.page)
    expect(links).to_have_count(100)
    scroll_list_to_end(chat.page)
    expect(links).to_have_count(134)
    expect(links.last).to_have_text("Conversation 0")
    expect(chat.page.get_by_text("No conversation matches.")).to_be_hidden()


def test_arrow_keys_move_between_conversations_and_page_in_more(chat: ChatPage) -> None:
    seed_many(chat.page, 120)
    chat.reload()
    first = chat.conversation_link("Conversation 119")
    first.focus()
    chat.page.keyboard.press("ArrowDown")
    expect(chat.conversation_link("Conversation 118")).to_be_focused()
    chat.page.keyboard.press("ArrowUp")
    expect(first).to_be_focused()
    chat.page.keyboard.press("End")  # the last of those loaded ...
    expect(chat.conversation_link("Conversation 70")).to_be_focused()
    chat.page.keyboard.press("ArrowDown")  # ... and from there, the next page comes
    expect(chat.conversation_link("Conversation 69")).to_be_focused()
    chat.page.keyboard.press("End")
    expect(chat.conversation_link("Conversation 20")).to_be_focused()
    chat.page.keyboard.press("Home")
    expect(first).to_be_focused()
    chat.page.keyboard.press("Enter")
    expect(chat.messages.locator(".content").first).to_have_text("Question 0 of 119")


def test_a_conversation_renamed_in_another_tab_changes_here_in_place(
    chat: ChatPage, page: Page
) -> None:
    seed_many(chat.page, 60)
    chat.reload()
    chat.page.evaluate(WATCH_SIDEBAR)
    other = ChatPage(page.context.new_page()).open()
    other.sidebar.get_by_role("button", name="Rename “Conversation 55”").click()
    title = other.page.get_by_label("Conversation title")
    title.fill("Renamed elsewhere")
    title.press("Enter")
    expect(chat.conversation_link("Renamed elsewhere")).to_be_visible()
    assert touched(chat.page) == {"c00055"}
    other.page.close()


def test_the_conversation_list_is_one_tab_stop_that_remembers_the_row(chat: ChatPage) -> None:
    seed_many(chat.page, 5)
    chat.reload()
    search = chat.page.get_by_label("Search conversations")
    after_list = chat.page.get_by_role("button", name="Import / export")
    search.focus()
    chat.page.keyboard.press("Tab")
    expect(chat.conversation_link("Conversation 4")).to_be_focused()
    chat.page.keyboard.press("Tab")  # not Rename, Delete, then the next row: out of the list
    expect(after_list).to_be_focused()
    chat.page.keyboard.press("Shift+Tab")
    expect(chat.conversation_link("Conversation 4")).to_be_focused()
    chat.page.keyboard.press("ArrowDown")
    chat.page.keyboard.press("ArrowDown")
    chat.page.keyboard.press("Tab")
    expect(after_list).to_be_focused()
    chat.page.keyboard.press("Shift+Tab")  # back where the list was left
    expect(chat.conversation_link("Conversation 2")).to_be_focused()


def test_the_open_conversation_is_the_list_s_tab_stop(chat: ChatPage) -> None:
    seed_many(chat.page, 5)
    chat.reload()
    chat.open("/#c00001")
    expect(chat.conversation_link("Conversation 1")).to_have_attribute("aria-current", "page")
    chat.page.get_by_label("Search conversations").focus()
    chat.page.keyboard.press("Tab")
    expect(chat.conversation_link("Conversation 1")).to_be_focused()


def test_a_row_s_rename_and_delete_are_reached_by_arrows_and_shortcut_keys(
    chat: ChatPage,
) -> None:
    seed_many(chat.page, 3)
    chat.reload()
    link = chat.conversation_link("Conversation 1")
    link.focus()
    chat.page.keyboard.press("ArrowRight")
    expect(chat.sidebar.get_by_role("button", name="Rename “Conversation 1”")).to_be_focused()
    chat.page.keyboard.press("ArrowRight")
    expect(chat.sidebar.get_by_role("button", name="Delete “Conversation 1”")).to_be_focused()
    chat.page.keyboard.press("ArrowLeft")
    chat.page.keyboard.press("ArrowLeft")
    expect(link).to_be_focused()
    chat.page.keyboard.press("F2")
    title = chat.page.get_by_label("Conversation title")
    expect(title).to_be_focused()
    title.fill("Renamed by keys")
    title.press("Enter")
    renamed = chat.conversation_link("Renamed by keys")
    expect(renamed).to_be_focused()
    expect(chat.sidebar.get_by_role("link")).to_have_count(3)
    chat.page.keyboard.press("Delete")
    expect(chat.page.locator("#toast")).to_contain_text("Deleted “Renamed by keys”.")
    expect(renamed).to_have_count(0)
    expect(chat.sidebar.get_by_role("link")).to_have_count(2)
