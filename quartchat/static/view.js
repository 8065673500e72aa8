// The message list. Each message is one <article>, created once and updated in place: a streamed
// token touches only its own message, whose reply is rendered incrementally (stream-render.js),
// a finished message is rendered once, and a long conversation is drawn newest-first in batches
// so the latest messages appear at once.

import { h, iconButton } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { StreamRenderer } from "./stream-render.js";
import { costOf, dollars, tokens } from "./usage-format.js";

const FIRST_BATCH = 30; // enough to fill any screen
const BATCH = 60;
const BATCH_MS = 10;
// A reply still being written (here, or in another tab) is rendered incrementally as it grows.
const LIVE = new Set(["streaming", "elsewhere"]);
const LONG_LINES = 50; // a question longer than this is folded behind "Show all"

const clock = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const day = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
const minutes = new Map(); // minute -> [shown, title]: a conversation's messages share minutes

/** When a message was written: the time (and the day, if not today); the whole date on hover. */
function timeOf(ms) {
  const date = new Date(ms);
  const minute = Math.floor(ms / 60000);
  let words = minutes.get(minute);
  if (!words) {
    const today = date.toDateString() === new Date().toDateString();
    words = [today ? clock.format(date) : `${day.format(date)}, ${clock.format(date)}`, full.format(date)];
    if (minutes.size > 5000) minutes.clear();
    minutes.set(minute, words);
  }
  return h("time", { className: "msg-time", dateTime: date.toISOString(), title: words[1] }, words[0]);
}

/** A rate-limited Retry: off, counting the seconds down, until `at` (ms since the epoch). */
function countDown(button, at) {
  const left = () => Math.ceil((at - Date.now()) / 1000);
  button.disabled = true;
  button.textContent = `Retry in ${left()} s`;
  const timer = setInterval(() => {
    if (left() > 0 && button.isConnected) {
      button.textContent = `Retry in ${left()} s`;
      return;
    }
    clearInterval(timer); // the wait is over (or the message is no longer shown)
    button.disabled = false;
    button.textContent = "Retry";
  }, 1000);
}

/**
 * A reply's tokens, prompt and reply, in words a screen reader reads as they are; and what they
 * cost when the model has a price (today's price: the tooltip says so).
 */
function usageOf(usage, price) {
  const parts = [h("span", {}, `${tokens(usage.prompt_tokens)} prompt + ${tokens(usage.completion_tokens)} reply tokens`)];
  if (price) {
    const title = `At today's price: ${dollars(price.input_per_million)} per million prompt tokens, ${dollars(price.output_per_million)} per million reply tokens`;
    parts.push(h("span", { className: "cost", title }, ` · ${dollars(costOf(usage, price))}`));
  }
  return h("span", { className: "usage" }, ...parts);
}

export class MessageList {
  /**
   * `onAction(action, messageId, {button, text})` for copy, edit, regenerate, retry, copy-code
   * (`text`: the code), save-edit (`text`: the edited message), prev-version and next-version.
   * `versionsOf(message)`: which version a message is among its siblings, {index, count}.
   * `priceOf(model)`: the model's price ({input_per_million, output_per_million}), or null.
   */
  constructor(container, { onAction, versionsOf = () => null, priceOf = () => null }) {
    this.el = container;
    this.onAction = onAction;
    this.versionsOf = versionsOf;
    this.priceOf = priceOf;
    this.articles = new Map();
    this.dirty = new Set();
    this.frame = 0;
    this.generation = 0;
    container.addEventListener("click", (event) => this.#click(event));
    container.addEventListener("submit", (event) => this.#submitEdit(event));
    container.addEventListener("keydown", (event) => this.#editKeys(event));
  }

  /**
   * Draw a whole conversation (on switching to it): the newest messages now, older ones in
   * batches. `through`: a message to show at once too (a search result's), with all after it.
   */
  show(messages, { through = null } = {}) {
    this.generation += 1;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dirty.clear();
    for (const article of this.articles.values()) article.stream?.cancel();
    this.articles.clear();
    let first = Math.max(0, messages.length - FIRST_BATCH);
    if (through) first = Math.min(first, Math.max(0, messages.findIndex((m) => m.id === through)));
    this.el.replaceChildren(...messages.slice(first).map((m) => this.#create(m)));
    const older = messages.slice(0, first);
    const generation = this.generation;
    const prependBatch = () => {
      if (generation !== this.generation || !older.length) return;
      // As many as fit in a few milliseconds (Markdown with code costs far more than a line of
      // text), so no frame of a long conversation's drawing is a long task.
      const start = performance.now();
      const batch = [];
      do batch.push(this.#create(older.pop()));
      while (older.length && batch.length < BATCH && performance.now() - start < BATCH_MS);
      const fragment = document.createDocumentFragment();
      fragment.append(...batch.reverse());
      this.el.prepend(fragment); // scroll anchoring keeps what the reader sees in place
      if (older.length) requestAnimationFrame(prependBatch);
    };
    if (older.length) requestAnimationFrame(prependBatch);
  }

  /** Scroll a message into the middle of the view and mark it (the message a search found). */
  reveal(messageId) {
    for (const old of this.el.querySelectorAll(".msg.match")) old.classList.remove("match");
    const article = this.articles.get(messageId);
    if (!article) return false;
    article.classList.add("match");
    article.scrollIntoView({ block: "center" });
    return true;
  }

  append(message) {
    this.el.append(this.#create(message));
  }

  /** Show a message's new state in a coming frame (many calls per frame cost one render). */
  update(message) {
    const stream = this.articles.get(message.id)?.stream;
    // A streaming reply paces its own renders; nothing else of it changes while it streams.
    if (stream && LIVE.has(message.status)) return stream.update(message.content);
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

  /** Write every footer again (the prices became known): only those that change are touched. */
  refreshMeta() {
    for (const article of this.articles.values()) if (article.message) this.#footer(article, article.message);
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
    article.stream?.cancel();
    this.articles.delete(article.dataset.id);
    article.remove();
  }

  #create(message) {
    const user = message.role === "user";
    const actions = h("div", { className: "actions" }, this.#versions(message), iconButton("copy", "Copy message", { dataset: { action: "copy" } }));
    if (user) actions.append(iconButton("edit", "Edit message", { dataset: { action: "edit" } }));
    else actions.append(iconButton("refresh", "Regenerate reply", { dataset: { action: "regenerate" } }));
    if (message.createdAt) actions.append(timeOf(message.createdAt));
    const article = h(
      "article",
      { className: `msg ${message.role}`, dataset: { id: message.id } },
      h("h2", { className: "visually-hidden" }, user ? "You said:" : "quartchat said:"),
      h("div", { className: "bubble" }, h("div", { className: user ? "content plain" : "content markdown", dir: user ? "auto" : null })),
      h("div", { className: "meta" }),
      actions,
    );
    this.articles.set(message.id, article);
    this.#fill(article, message);
    if (user) this.#collapseLong(article, message);
    return article;
  }

  /** `‹ 2/3 ›`: switch between the versions of a message (none when there is one). */
  #versions(message) {
    const { index = 1, count = 1 } = this.versionsOf(message) ?? {};
    if (count < 2) return null;
    const box = h(
      "div",
      { className: "versions", role: "group", "aria-label": "Versions" },
      iconButton("prev", "Previous version", { dataset: { action: "prev-version" }, disabled: index <= 1 }),
      h("span", { className: "version-count", "aria-hidden": "true" }, `${index}/${count}`),
      h("span", { className: "visually-hidden" }, `Version ${index} of ${count}`),
      iconButton("next", "Next version", { dataset: { action: "next-version" }, disabled: index >= count }),
    );
    return box;
  }

  /** Show a message's version switcher as it is now (after a new version was made). */
  setVersions(message) {
    const actions = this.articles.get(message.id)?.querySelector(".actions");
    if (!actions) return;
    const box = this.#versions(message);
    const old = actions.querySelector(".versions");
    if (old && box) old.replaceWith(box);
    else if (old) old.remove();
    else if (box) actions.prepend(box);
  }

  /** Focus one of a message's action buttons (the other version button if that one is off). */
  focusAction(messageId, action) {
    const actions = this.articles.get(messageId)?.querySelector(".actions");
    const button = actions?.querySelector(`[data-action="${action}"]:not(:disabled)`) ?? actions?.querySelector(".versions button:not(:disabled)");
    button?.focus();
  }

  /** Long pasted text folds to a few lines behind "Show all". */
  #collapseLong(article, message) {
    let lines = 1;
    for (let i = message.content.indexOf("\n"); i !== -1 && lines <= LONG_LINES; i = message.content.indexOf("\n", i + 1)) lines += 1;
    if (lines <= LONG_LINES) return;
    const bubble = article.querySelector(".bubble");
    bubble.classList.add("collapsed");
    bubble.id = `body-${message.id}`;
    bubble.after(h("button", { type: "button", className: "btn quiet show-all", dataset: { action: "expand" }, "aria-expanded": "false", "aria-controls": bubble.id }, "Show all"));
  }

  #toggleLong(button) {
    const bubble = button.closest(".msg").querySelector(".bubble");
    const collapsed = bubble.classList.toggle("collapsed");
    button.setAttribute("aria-expanded", String(!collapsed));
    button.textContent = collapsed ? "Show all" : "Show less";
  }

  #fill(article, message) {
    const content = article.querySelector(".content");
    if (message.role === "user") {
      if (article.rendered !== message.content) content.textContent = message.content;
      article.rendered = message.content;
      return;
    }
    const streaming = message.status === "streaming";
    if (LIVE.has(message.status)) {
      article.stream ??= new StreamRenderer(content);
      article.stream.update(message.content);
      article.rendered = null;
    } else if (article.stream) {
      article.stream.finish(message.content); // the blocks shown stay; the rest is rendered now
      article.stream = null;
      article.rendered = message.content;
    } else if (article.rendered !== message.content) {
      content.replaceChildren(renderMarkdown(message.content));
      article.rendered = message.content;
    }
    article.classList.toggle("streaming", streaming);
    article.classList.toggle("empty", !message.content);
    article.setAttribute("aria-busy", String(streaming));
    // The footer and the error box are replaced only when they change (not at every update).
    this.#footer(article, message);
    const error = JSON.stringify(message.error ?? null);
    if (article.error !== error) {
      article.error = error;
      article.querySelector(".error-box")?.remove();
      if (message.error) article.querySelector(".meta").before(this.#errorBox(message));
    }
  }

  #footer(article, message) {
    article.message = message;
    const meta = this.#meta(message);
    const footer = meta.map((part) => part.outerHTML).join("");
    if (article.footer !== footer) {
      article.footer = footer;
      article.querySelector(".meta").replaceChildren(...meta);
    }
  }

  #meta(message) {
    const parts = [];
    // A reply whose connection dropped is resumed by the store: said quietly meanwhile.
    if (message.status === "streaming") parts.push(h("span", { className: "status generating" }, message.reconnecting ? "Reconnecting…" : "Generating…"));
    if (message.status === "elsewhere") parts.push(h("span", { className: "status generating" }, "Being written in another tab…"));
    if (message.status === "stopped") parts.push(h("span", { className: "status stopped" }, "Stopped"));
    if (message.finishReason === "length") parts.push(h("span", { className: "status" }, "Cut off at the token limit"));
    if (message.model && message.status !== "streaming") parts.push(h("span", { className: "model" }, message.model));
    if (message.usage) parts.push(usageOf(message.usage, message.model ? this.priceOf(message.model) : null));
    return parts;
  }

  #errorBox(message) {
    const { error } = message;
    const detail = [error.code, error.requestId && `request ${error.requestId}`].filter(Boolean).join(", ");
    const retry = h("button", { type: "button", className: "btn", dataset: { action: "retry" } }, "Retry");
    if (error.retryAt > Date.now()) countDown(retry, error.retryAt);
    return h("div", { className: "error-box" }, h("p", {}, error.message, detail ? h("span", { className: "error-detail" }, ` (${detail})`) : null), retry);
  }

  #click(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || !this.el.contains(button)) return;
    const article = button.closest(".msg");
    const action = button.dataset.action;
    if (action === "cancel-edit") return this.endEdit(article.dataset.id);
    if (action === "expand") return this.#toggleLong(button);
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
