// The message list. Each message is one <article>, created once and updated in place: a streamed
// token re-renders only its own message, at most once per animation frame, and a long
// conversation is drawn newest-first in batches so the latest messages appear at once.

import { h, iconButton } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

const FIRST_BATCH = 30; // enough to fill any screen
const BATCH = 60;

function formatUsage(usage) {
  return {
    text: `${usage.total_tokens.toLocaleString()} tokens`,
    title: `${usage.prompt_tokens} prompt + ${usage.completion_tokens} reply tokens`,
  };
}

export class MessageList {
  /**
   * `onAction(action, messageId, {button, text})` for copy, edit, regenerate, retry, copy-code
   * (`text`: the code) and save-edit (`text`: the edited message).
   */
  constructor(container, { onAction }) {
    this.el = container;
    this.onAction = onAction;
    this.articles = new Map();
    this.dirty = new Set();
    this.frame = 0;
    this.generation = 0;
    container.addEventListener("click", (event) => this.#click(event));
    container.addEventListener("submit", (event) => this.#submitEdit(event));
    container.addEventListener("keydown", (event) => this.#editKeys(event));
  }

  /** Draw a whole conversation (on switching to it): the newest messages now, older ones in batches. */
  show(messages) {
    this.generation += 1;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dirty.clear();
    this.articles.clear();
    this.el.replaceChildren(...messages.slice(-FIRST_BATCH).map((m) => this.#create(m)));
    const older = messages.slice(0, Math.max(0, messages.length - FIRST_BATCH));
    const generation = this.generation;
    const prependBatch = () => {
      if (generation !== this.generation || !older.length) return;
      const batch = older.splice(-BATCH);
      const fragment = document.createDocumentFragment();
      fragment.append(...batch.map((m) => this.#create(m)));
      this.el.prepend(fragment); // scroll anchoring keeps what the reader sees in place
      if (older.length) requestAnimationFrame(prependBatch);
    };
    if (older.length) requestAnimationFrame(prependBatch);
  }

  append(message) {
    this.el.append(this.#create(message));
  }

  /** Re-render one message in the next frame (many calls per frame cost one render). */
  update(message) {
    this.dirty.add(message);
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        for (const m of this.dirty) this.updateNow(m);
        this.dirty.clear();
      });
    }
  }

  updateNow(message) {
    this.dirty.delete(message);
    const article = this.articles.get(message.id);
    if (article) this.#fill(article, message);
  }

  /** Remove a message and every message after it. */
  removeFrom(messageId) {
    const article = this.articles.get(messageId);
    if (!article) return;
    while (article.nextElementSibling) this.#forget(article.nextElementSibling);
    this.#forget(article);
  }

  startEdit(messageId, text) {
    const article = this.articles.get(messageId);
    if (!article || article.querySelector(".edit-form")) return;
    const area = h("textarea", { className: "edit-input", value: text, rows: Math.min(12, text.split("\n").length + 1), "aria-label": "Edit message" });
    const form = h(
      "form",
      { className: "edit-form" },
      area,
      h(
        "div",
        { className: "edit-actions" },
        h("button", { type: "button", className: "btn", dataset: { action: "cancel-edit" } }, "Cancel"),
        h("button", { type: "submit", className: "btn primary" }, "Send"),
      ),
    );
    article.classList.add("editing");
    article.querySelector(".bubble").after(form);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  endEdit(messageId) {
    const article = this.articles.get(messageId);
    if (!article) return;
    article.querySelector(".edit-form")?.remove();
    article.classList.remove("editing");
    article.querySelector("[data-action=edit]")?.focus();
  }

  #forget(article) {
    this.articles.delete(article.dataset.id);
    article.remove();
  }

  #create(message) {
    const user = message.role === "user";
    const actions = h("div", { className: "actions" }, iconButton("copy", "Copy message", { dataset: { action: "copy" } }));
    if (user) actions.append(iconButton("edit", "Edit message", { dataset: { action: "edit" } }));
    else actions.append(iconButton("refresh", "Regenerate reply", { dataset: { action: "regenerate" } }));
    const article = h(
      "article",
      { className: `msg ${message.role}`, dataset: { id: message.id } },
      h("h2", { className: "visually-hidden" }, user ? "You said:" : "quartchat said:"),
      h("div", { className: "bubble" }, h("div", { className: user ? "content plain" : "content markdown" })),
      h("div", { className: "meta" }),
      actions,
    );
    this.articles.set(message.id, article);
    this.#fill(article, message);
    return article;
  }

  #fill(article, message) {
    const content = article.querySelector(".content");
    if (article.rendered !== message.content) {
      if (message.role === "user") content.textContent = message.content;
      else content.replaceChildren(renderMarkdown(message.content));
      article.rendered = message.content;
    }
    if (message.role === "user") return;
    const streaming = message.status === "streaming";
    article.classList.toggle("streaming", streaming);
    article.classList.toggle("empty", !message.content);
    article.setAttribute("aria-busy", String(streaming));
    article.querySelector(".meta").replaceChildren(...this.#meta(message));
    article.querySelector(".error-box")?.remove();
    if (message.error) article.querySelector(".meta").before(this.#errorBox(message));
  }

  #meta(message) {
    const parts = [];
    if (message.status === "streaming") parts.push(h("span", { className: "status generating" }, "Generating…"));
    if (message.status === "stopped") parts.push(h("span", { className: "status stopped" }, "Stopped"));
    if (message.finishReason === "length") parts.push(h("span", { className: "status" }, "Cut off at the token limit"));
    if (message.model && message.status !== "streaming") parts.push(h("span", { className: "model" }, message.model));
    if (message.usage) {
      const { text, title } = formatUsage(message.usage);
      parts.push(h("span", { className: "usage", title }, text));
    }
    return parts;
  }

  #errorBox(message) {
    const { error } = message;
    const detail = [error.code, error.requestId && `request ${error.requestId}`].filter(Boolean).join(", ");
    return h(
      "div",
      { className: "error-box" },
      h("p", {}, error.message, detail ? h("span", { className: "error-detail" }, ` (${detail})`) : null),
      h("button", { type: "button", className: "btn", dataset: { action: "retry" } }, "Retry"),
    );
  }

  #click(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || !this.el.contains(button)) return;
    const article = button.closest(".msg");
    const action = button.dataset.action;
    if (action === "cancel-edit") return this.endEdit(article.dataset.id);
    const text = action === "copy-code" ? button.closest(".code-block").querySelector("code").textContent : null;
    this.onAction(action, article?.dataset.id, { button, text });
  }

  #submitEdit(event) {
    if (!event.target.matches(".edit-form")) return;
    event.preventDefault();
    const article = event.target.closest(".msg");
    const text = event.target.querySelector("textarea").value.trim();
    if (text) this.onAction("save-edit", article.dataset.id, { text });
  }

  #editKeys(event) {
    if (!event.target.matches(".edit-input")) return;
    if (event.key === "Escape") {
      event.stopPropagation();
      this.endEdit(event.target.closest(".msg").dataset.id);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      event.target.form.requestSubmit();
    }
  }
}
