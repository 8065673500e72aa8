// The conversation list in the sidebar. Each conversation is a link to `#<id>`, so the address
// names the open conversation: reload reopens it and Back/Forward move between conversations.
//
// The list is paged in from the store as it is scrolled (50 at a time), so a thousand
// conversations cost what the first screenful does, and it is never drawn again as a whole:
// a change touches its one item (a new title, a move to the top), and switching conversations
// touches the two items whose "current" mark changes. Search results are paged the same way.

import { h, iconButton } from "./dom.js";

const PAGE = 50;
// The list order: most recently updated first, ties by id (the store's order).
const before = (a, b) => a.updatedAt > b.updatedAt || (a.updatedAt === b.updatedAt && a.id > b.id);

export class Sidebar {
  /**
   * `store`: the conversation store (its list and search pages). `onRename(id, title)`,
   * `onDelete(id)`; selecting is plain navigation to the link. `noResults`: the element that
   * says a search found nothing.
   */
  constructor(list, { store, onRename, onDelete, noResults, onError = () => {} }) {
    this.list = list;
    this.store = store;
    this.onRename = onRename;
    this.onDelete = onDelete;
    this.onError = onError;
    this.noResults = noResults;
    this.items = new Map(); // id -> {summary, li}
    this.order = []; // the summaries shown, in list order
    this.next = null; // cursor of the next page; null when everything is shown
    this.started = false;
    this.query = "";
    this.generation = 0; // a newer reset() makes older pages that are still loading moot
    this.loading = null;
    this.currentId = null;
    this.renaming = null; // the id whose title is being edited: its item is left alone meanwhile
    this.end = h("li", { className: "list-end", "aria-hidden": "true" });
    list.append(this.end);
    // More items when the end of the list comes near the bottom of the sidebar.
    this.observer = new IntersectionObserver((entries) => entries.some((e) => e.isIntersecting) && this.more(), {
      root: list,
      rootMargin: "0px 0px 400px 0px",
    });
    this.observer.observe(this.end);
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const id = button.closest("li").dataset.id;
      if (button.dataset.action === "rename") this.startRename(id);
      else if (button.dataset.action === "delete") this.onDelete(id);
    });
    list.addEventListener("keydown", (event) => this.#keys(event));
  }

  /** Show the list (or the search results) from the top again. */
  async reset() {
    this.generation += 1;
    this.items.clear();
    this.order = [];
    this.next = null;
    this.started = false;
    this.loading = null;
    this.renaming = null;
    this.list.replaceChildren(this.end);
    await this.more();
  }

  /** Search: show only conversations containing `query` (empty: all of them). */
  setQuery(query) {
    this.query = query.trim();
    return this.reset();
  }

  /** Load the next page, if there is one (once at a time). */
  more() {
    if (this.loading) return this.loading;
    if (this.started && this.next === null) return Promise.resolve();
    const generation = this.generation;
    const options = { after: this.next, limit: PAGE };
    this.loading = (this.query ? this.store.search(this.query, options) : this.store.list(options))
      .then((page) => {
        if (generation !== this.generation) return;
        this.started = true;
        this.next = page.next;
        const fragment = document.createDocumentFragment();
        for (const summary of page.items) {
          if (this.items.has(summary.id)) continue; // moved up by a change while this page loaded
          const li = this.#item(summary);
          this.items.set(summary.id, { summary, li });
          this.order.push(summary);
          fragment.append(li);
        }
        this.list.insertBefore(fragment, this.end);
        this.#showNoResults();
      })
      .catch((error) => this.onError(error))
      .finally(() => {
        if (generation !== this.generation) return;
        this.loading = null;
        // The end may still be in view (a short page): look again.
        this.observer.unobserve(this.end);
        this.observer.observe(this.end);
      });
    return this.loading;
  }

  /** A conversation was saved: update its item, or move it, or add it where it belongs. */
  upsert(summary) {
    const entry = this.items.get(summary.id);
    if (entry) {
      const old = entry.summary;
      entry.summary = summary;
      if (old.title !== summary.title && this.renaming !== summary.id) this.#fill(entry.li, summary);
      if (old.updatedAt !== summary.updatedAt && !this.query) {
        this.order.splice(this.order.indexOf(old), 1);
        this.#place(summary, entry.li);
      } else this.order[this.order.indexOf(old)] = summary;
      return;
    }
    if (this.query || !this.started) return; // search results are what was found; a page is loading
    const last = this.order[this.order.length - 1];
    if (this.next !== null && (!last || !before(summary, last))) return; // a later page brings it
    const li = this.#item(summary);
    this.items.set(summary.id, { summary, li });
    this.#place(summary, li);
    this.#showNoResults();
  }

  remove(id) {
    const entry = this.items.get(id);
    if (!entry) return;
    this.items.delete(id);
    this.order.splice(this.order.indexOf(entry.summary), 1);
    if (this.renaming === id) this.renaming = null;
    entry.li.remove();
    this.#showNoResults();
  }

  /** Mark the open conversation (two items change at most). */
  setCurrent(id) {
    if (id === this.currentId) return;
    const old = this.items.get(this.currentId)?.li;
    this.currentId = id;
    if (old) this.#mark(old, false);
    const li = this.items.get(id)?.li;
    if (li) this.#mark(li, true);
  }

  #place(summary, li) {
    let low = 0;
    let high = this.order.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (before(this.order[mid], summary)) low = mid + 1;
      else high = mid;
    }
    this.list.insertBefore(li, this.order[low] ? this.items.get(this.order[low].id).li : this.end);
    this.order.splice(low, 0, summary);
  }

  #showNoResults() {
    this.noResults.hidden = !(this.query && this.started && this.next === null && !this.order.length);
  }

  #mark(li, current) {
    li.classList.toggle("current", current);
    const link = li.querySelector(".conversation-link");
    if (current) link?.setAttribute("aria-current", "page");
    else link?.removeAttribute("aria-current");
  }

  #item(summary) {
    const li = h("li", { className: "conversation", dataset: { id: summary.id } });
    this.#fill(li, summary);
    return li;
  }

  #fill(li, summary) {
    const current = summary.id === this.currentId;
    li.classList.toggle("current", current);
    li.replaceChildren(
      // A search result names the message it found (`messageId`): the page opens it there.
      h(
        "a",
        { href: `#${summary.id}`, className: "conversation-link", "aria-current": current ? "page" : null, title: summary.title, dataset: summary.messageId ? { messageId: summary.messageId } : null },
        summary.title,
      ),
      iconButton("edit", `Rename “${summary.title}”`, { dataset: { action: "rename" } }),
      iconButton("trash", `Delete “${summary.title}”`, { dataset: { action: "delete" } }),
    );
  }

  /** Up and Down move between conversations (paging in more at the end); Home and End too. */
  async #keys(event) {
    const link = event.target.closest?.(".conversation-link");
    if (!link || !["ArrowDown", "ArrowUp", "Home", "End"].includes(event.key)) return;
    event.preventDefault();
    const links = () => [...this.list.querySelectorAll(".conversation-link")];
    let all = links();
    const at = all.indexOf(link);
    let target;
    if (event.key === "ArrowUp") target = all[Math.max(0, at - 1)];
    else if (event.key === "Home") target = all[0];
    else {
      // At the last item loaded, Down and End bring the next page.
      if (at === all.length - 1 && this.next !== null) {
        await this.more();
        all = links();
      }
      target = event.key === "End" ? all[all.length - 1] : all[Math.min(all.length - 1, at + 1)];
    }
    target?.focus();
  }

  startRename(id) {
    const entry = this.items.get(id);
    if (!entry) return;
    const { li } = entry;
    const input = h("input", { className: "rename-input", value: entry.summary.title, maxLength: 200, "aria-label": "Conversation title" });
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      this.renaming = null;
      const title = input.value.trim();
      const summary = this.items.get(id)?.summary;
      if (!summary) return;
      if (save && title && title !== summary.title) {
        this.upsert({ ...summary, title }); // at once; the store's change confirms it
        this.onRename(id, title);
      } else this.#fill(li, summary);
      li.querySelector(".conversation-link")?.focus();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    this.renaming = id;
    li.replaceChildren(input);
    input.focus();
    input.select();
  }
}
