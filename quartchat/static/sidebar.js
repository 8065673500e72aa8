// The conversation list in the sidebar. Each conversation is a link to `#<id>`, so the address
// names the open conversation: reload reopens it and Back/Forward move between conversations.
//
// The list is paged in from the store as it is scrolled (50 at a time), so a thousand
// conversations cost what the first screenful does, and it is never drawn again as a whole:
// a change touches its one item (a new title, a move to the top), and switching conversations
// touches the two items whose "current" mark changes. Search results are paged the same way.
//
// For the keyboard the list is one Tab stop (a roving tabindex over the links, not a listbox:
// a row holds a link and two buttons, which an option may not contain): arrows move between
// rows and along a row, F2 renames, Delete deletes (see #keys and docs/ui.md, Keyboard).

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
    // The list is one Tab stop (a roving tabindex): only this item's link has tabindex 0, the
    // open conversation's or else the one last focused; every other link and button has -1.
    this.stopId = null;
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
    list.addEventListener("focusin", (event) => {
      const li = event.target.closest("li[data-id]");
      if (li) this.#setStop(li.dataset.id);
    });
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
    this.stopId = null;
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
        this.#keepStop();
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
    this.#keepStop();
    this.#showNoResults();
  }

  remove(id) {
    const entry = this.items.get(id);
    if (!entry) return;
    const at = this.order.indexOf(entry.summary);
    this.items.delete(id);
    this.order.splice(at, 1);
    if (this.renaming === id) this.renaming = null;
    entry.li.remove();
    if (this.stopId === id) {
      // The Tab stop goes to the neighbour, so the list stays reachable.
      this.stopId = null;
      const neighbour = this.order[at] ?? this.order[at - 1];
      if (neighbour) this.#setStop(neighbour.id);
    }
    this.#showNoResults();
  }

  /** Mark the open conversation (two items change at most). */
  setCurrent(id) {
    if (id === this.currentId) return;
    const old = this.items.get(this.currentId)?.li;
    this.currentId = id;
    if (old) this.#mark(old, false);
    const li = this.items.get(id)?.li;
    if (li) {
      this.#mark(li, true);
      this.#setStop(id);
    }
  }

  /** Make `id`'s link the list's one Tab stop (two items change at most). */
  #setStop(id) {
    if (id === this.stopId || !this.items.has(id)) return;
    this.items.get(this.stopId)?.li.querySelector(".conversation-link")?.setAttribute("tabindex", "-1");
    this.stopId = id;
    this.items.get(id).li.querySelector(".conversation-link")?.setAttribute("tabindex", "0");
  }

  /** A list with items always has a Tab stop: the open conversation, or else the first item. */
  #keepStop() {
    if (this.stopId !== null || !this.order.length) return;
    this.#setStop(this.items.has(this.currentId) ? this.currentId : this.order[0].id);
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
        {
          href: `#${summary.id}`,
          className: "conversation-link",
          "aria-current": current ? "page" : null,
          "aria-keyshortcuts": "F2 Delete",
          title: summary.title,
          tabIndex: summary.id === this.stopId ? 0 : -1,
          dataset: summary.messageId ? { messageId: summary.messageId } : null,
        },
        summary.title,
      ),
      iconButton("edit", `Rename “${summary.title}”`, { dataset: { action: "rename" }, tabIndex: -1 }),
      iconButton("trash", `Delete “${summary.title}”`, { dataset: { action: "delete" }, tabIndex: -1 }),
    );
  }

  /**
   * The list's keys, from anywhere in a row: Up and Down move between conversations (paging in
   * more at the end), Home and End too; Left and Right move along the row (its link, Rename,
   * Delete); F2 renames and Delete deletes the row's conversation. Enter opens it (a link).
   */
  async #keys(event) {
    const li = event.target.closest?.("li[data-id]");
    if (!li || event.target.matches("input") || event.altKey || event.ctrlKey || event.metaKey) return;
    const id = li.dataset.id;
    if (event.key === "F2" || event.key === "Delete") {
      event.preventDefault();
      if (event.key === "F2") this.startRename(id);
      else this.onDelete(id);
      return;
    }
    if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      event.preventDefault();
      const controls = [...li.querySelectorAll("a, button")];
      const at = controls.indexOf(event.target);
      controls[Math.max(0, Math.min(controls.length - 1, at + (event.key === "ArrowRight" ? 1 : -1)))]?.focus();
      return;
    }
    if (!["ArrowDown", "ArrowUp", "Home", "End"].includes(event.key)) return;
    event.preventDefault();
    const links = () => [...this.list.querySelectorAll(".conversation-link")];
    let all = links();
    const at = all.indexOf(li.querySelector(".conversation-link"));
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
