// A list of things on an account page (sessions, tokens, users, invites): one <ul> region, one
// <li> per item, keyed by id. Adding, changing or removing one item touches only its own row,
// and focus never falls to the top of the page when the focused row changes or goes.

import { h } from "./dom.js";
import { time } from "./forms.js";

export class RowList {
  #rows = new Map();

  /**
   * `render(item)` returns the row's content: {title, badges, meta, actions}; give each action
   * button a `dataset.slot`, so focus can stay in its slot when the row is drawn again.
   * `empty` is shown while the list has no row; `fallback` takes the focus when the last goes.
   */
  constructor(list, render, { empty = null, fallback = null } = {}) {
    this.list = list;
    this.render = render;
    this.empty = empty;
    this.fallback = fallback;
  }

  get size() {
    return this.#rows.size;
  }

  ids() {
    return [...this.#rows.keys()];
  }

  replaceAll(items) {
    this.#rows.clear();
    this.list.replaceChildren(...items.map((item) => this.#row(item)));
    this.#showEmpty();
  }

  append(items) {
    this.list.append(...items.map((item) => this.#row(item)));
    this.#showEmpty();
  }

  update(item) {
    const row = this.#rows.get(String(item.id));
    if (!row) return;
    const slot = row.contains(document.activeElement) ? document.activeElement.dataset.slot : null;
    row.replaceChildren(...this.#content(item));
    if (slot) (row.querySelector(`[data-slot="${slot}"]`) ?? row.querySelector("button"))?.focus();
  }

  remove(id) {
    const row = this.#rows.get(String(id));
    if (!row) return;
    const hadFocus = row.contains(document.activeElement);
    const neighbour = row.nextElementSibling ?? row.previousElementSibling;
    row.remove();
    this.#rows.delete(String(id));
    this.#showEmpty();
    if (hadFocus) (neighbour?.querySelector("button") ?? this.fallback)?.focus();
  }

  #row(item) {
    const row = h("li", { className: "row", dataset: { id: String(item.id) } }, ...this.#content(item));
    this.#rows.set(String(item.id), row);
    return row;
  }

  #content(item) {
    const { title, badges = [], meta = [], actions = [] } = this.render(item);
    return [
      h(
        "div",
        { className: "row-main" },
        h("div", { className: "row-title" }, title, ...badges),
        meta.length ? h("div", { className: "row-meta" }, ...meta) : null,
      ),
      actions.length ? h("div", { className: "row-actions" }, ...actions) : null,
    ];
  }

  #showEmpty() {
    if (this.empty) this.empty.hidden = this.#rows.size > 0;
  }
}

/** A small label beside a row's title. */
export function badge(text, kind = "") {
  return h("span", { className: `badge ${kind}`.trim() }, text);
}

/** A row's button: a short visible label, and a full name for screen readers that begins with
 * it (WCAG 2.5.3: speech users say what they see). */
export function rowButton(label, fullName, slot, onClick, { danger = false } = {}) {
  const button = h(
    "button",
    { type: "button", className: danger ? "btn danger" : "btn", dataset: { slot }, "aria-label": fullName },
    label,
  );
  button.addEventListener("click", () => onClick(button));
  return button;
}

const isExpired = (token) => token.expires_at !== null && new Date(token.expires_at) <= new Date();

/** An API token's row (the account page's and the admin's): an "expired" badge past its date
 * (it stays listed until revoked); its prefix, when it was made and last used, and when it
 * expires, if ever. */
export function tokenRow(token) {
  const expiry = token.expires_at
    ? [isExpired(token) ? " · expired " : " · expires ", time(token.expires_at)]
    : [" · never expires"];
  return {
    title: token.name,
    badges: isExpired(token) ? [badge("expired", "alert")] : [],
    meta: [`${token.prefix}… · made `, time(token.created_at), " · last used ", time(token.last_used_at), ...expiry],
  };
}
