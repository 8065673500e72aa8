// The conversation list in the sidebar. Each conversation is a link to `#<id>`, so the address
// names the open conversation: reload reopens it and Back/Forward move between conversations.

import { h, iconButton } from "./dom.js";

export class Sidebar {
  /** `onRename(id, title)`, `onDelete(id)`; selecting is plain navigation to the link. */
  constructor(list, { onRename, onDelete }) {
    this.list = list;
    this.onRename = onRename;
    this.onDelete = onDelete;
    this.summaries = [];
    this.currentId = null;
    this.filter = null; // null, or the Set of ids a search matched
    this.renaming = false; // while a title is being edited, re-renders wait (they would drop it)
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const id = button.closest("li").dataset.id;
      if (button.dataset.action === "rename") this.startRename(id);
      else if (button.dataset.action === "delete") this.onDelete(id);
    });
  }

  render(summaries = this.summaries, currentId = this.currentId) {
    this.summaries = summaries;
    this.currentId = currentId;
    if (this.renaming) return;
    const shown = this.filter ? summaries.filter((s) => this.filter.has(s.id)) : summaries;
    this.list.replaceChildren(...shown.map((s) => this.#item(s)));
    document.getElementById("no-results").hidden = !(this.filter && summaries.length && !shown.length);
  }

  setFilter(ids) {
    this.filter = ids ? new Set(ids) : null;
    this.render();
  }

  #item(summary) {
    const current = summary.id === this.currentId;
    return h(
      "li",
      { className: `conversation${current ? " current" : ""}`, dataset: { id: summary.id } },
      h("a", { href: `#${summary.id}`, className: "conversation-link", "aria-current": current ? "page" : null, title: summary.title }, summary.title),
      iconButton("edit", `Rename “${summary.title}”`, { dataset: { action: "rename" } }),
      iconButton("trash", `Delete “${summary.title}”`, { dataset: { action: "delete" } }),
    );
  }

  startRename(id) {
    const item = this.list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
    const summary = this.summaries.find((s) => s.id === id);
    if (!item || !summary) return;
    const input = h("input", { className: "rename-input", value: summary.title, maxLength: 200, "aria-label": "Conversation title" });
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      this.renaming = false;
      const title = input.value.trim();
      if (save && title && title !== summary.title) this.onRename(id, title);
      else this.render();
      this.list.querySelector(`li[data-id="${CSS.escape(id)}"] .conversation-link`)?.focus();
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
    this.renaming = true;
    item.replaceChildren(input);
    input.focus();
    input.select();
  }
}
