// The model picker in the top bar: an editable combobox with a listbox popup (the WAI-ARIA
// "combobox with list autocomplete" pattern) over the models the server lists. Typing filters
// the list, the first match is the active option (aria-activedescendant), Enter picks it, Escape
// closes the list and puts the conversation's model back. A name the server does not list is
// accepted only when the server allows any model (`any_model` from GET /api/models): the list
// then starts with "Use “<typed>”".
//
// Its value is what a conversation's settings hold: "" for the server's default (whatever that
// becomes), else a model's name.
//
// When an upstream is down the server leaves its models out and says so (`warnings`): the
// sentences show above the list, and the field names them in its description.

import { h } from "./dom.js";

export class ModelPicker {
  /** `root` holds the input (role=combobox), the listbox and the note; `onPick(value)`. */
  constructor(root, { onPick }) {
    this.input = root.querySelector("[role=combobox]");
    this.popup = root.querySelector(".model-popup");
    this.list = root.querySelector("[role=listbox]");
    this.note = root.querySelector(".model-note");
    this.defaultTag = root.querySelector(".model-default");
    this.warnings = root.querySelector(".model-warnings");
    this.onPick = onPick;
    this.models = [];
    this.defaultModel = "";
    this.anyModel = false;
    this.value = "";
    this.options = []; // what the list shows: {value, label, li}
    this.active = -1;

    this.input.addEventListener("input", () => this.#open(this.input.value));
    this.input.addEventListener("keydown", (event) => this.#keys(event));
    this.input.addEventListener("focus", () => this.input.select());
    this.input.addEventListener("click", () => {
      if (this.popup.hidden) this.#open("");
    });
    // Leaving the field closes the list and keeps the model as it was: only a pick changes it.
    this.input.addEventListener("blur", () => this.#close());
    // A press on the list must not take the focus from the input (which would close it first).
    this.popup.addEventListener("mousedown", (event) => event.preventDefault());
    this.list.addEventListener("click", (event) => {
      const li = event.target.closest("[role=option]");
      const option = this.options.find((o) => o.li === li);
      if (option) this.#pick(option.value);
    });
  }

  /** The server's list: `{default, models, any_model, warnings}` (absent: false, none). */
  setModels({ defaultModel, models, anyModel, warnings }) {
    this.defaultModel = defaultModel;
    this.models = [...new Set([defaultModel, ...(models ?? [])].filter(Boolean))];
    this.anyModel = anyModel === true;
    const said = Array.isArray(warnings) ? warnings.filter((w) => typeof w === "string") : [];
    this.warnings.textContent = said.join(" ");
    this.warnings.hidden = said.length === 0;
    this.show(this.value);
    // The list arrives after the page is ready: one typed into meanwhile is filtered again.
    if (!this.popup.hidden) this.#open(this.input.value);
  }

  /** Show a conversation's model (`""`: the server's default). */
  show(value) {
    this.value = value ?? "";
    const name = this.value || this.defaultModel;
    if (document.activeElement !== this.input || this.popup.hidden) this.input.value = name;
    const isDefault = Boolean(name) && name === this.defaultModel;
    this.defaultTag.hidden = !isDefault;
    // A hidden element named by aria-describedby is still read: name each only when it is shown
    // (the warnings: when there are some, even while the list is closed).
    const described = [isDefault && this.defaultTag.id, !this.warnings.hidden && this.warnings.id].filter(Boolean);
    if (described.length) this.input.setAttribute("aria-describedby", described.join(" "));
    else this.input.removeAttribute("aria-describedby");
  }

  #label(id) {
    return id === this.defaultModel ? `${id} (default)` : id;
  }

  /** Open the list, filtered by `text` (empty or the name shown: every model). */
  #open(text) {
    const query = text.trim();
    const all = !query || query === (this.value || this.defaultModel);
    const lower = query.toLowerCase();
    // Exact matches first, then names that start with what is typed, then those containing it.
    const rank = (id) => (id.toLowerCase() === lower ? 0 : id.toLowerCase().startsWith(lower) ? 1 : 2);
    const ids = all ? this.models : this.models.filter((id) => id.toLowerCase().includes(lower)).sort((a, b) => rank(a) - rank(b));
    const options = ids.map((id) => ({ value: id === this.defaultModel ? "" : id, label: this.#label(id) }));
    if (!all && this.anyModel && !this.models.includes(query)) options.unshift({ value: query, label: `Use “${query}”` });
    this.options = options.map((option, i) => ({
      ...option,
      li: h("li", { id: `model-option-${i}`, role: "option", className: option.value === this.value ? "current" : "" }, option.label),
    }));
    this.list.replaceChildren(...this.options.map((o) => o.li));
    this.note.textContent = this.options.length ? "" : `No listed model matches “${query}”.`;
    this.popup.hidden = false;
    this.input.setAttribute("aria-expanded", String(this.options.length > 0));
    // Typing makes the best match active (Enter picks it); opening the whole list, the current one.
    const current = this.options.findIndex((o) => o.value === this.value);
    this.#activate(all ? Math.max(0, current) : 0);
  }

  #close() {
    this.popup.hidden = true;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
    this.active = -1;
    this.input.value = this.value || this.defaultModel;
  }

  #activate(index) {
    this.options[this.active]?.li.setAttribute("aria-selected", "false");
    this.active = this.options.length ? Math.max(0, Math.min(this.options.length - 1, index)) : -1;
    const option = this.options[this.active];
    for (const o of this.options) o.li.setAttribute("aria-selected", String(o === option));
    if (option) {
      this.input.setAttribute("aria-activedescendant", option.li.id);
      option.li.scrollIntoView({ block: "nearest" });
    } else this.input.removeAttribute("aria-activedescendant");
  }

  #pick(value) {
    this.value = value;
    this.#close();
    this.show(value);
    this.onPick(value);
  }

  #keys(event) {
    const open = !this.popup.hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (event.altKey && event.key === "ArrowUp") this.#close();
      else if (!open) this.#open("");
      else this.#activate(this.active + (event.key === "ArrowDown" ? 1 : -1));
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (open && this.options[this.active]) this.#pick(this.options[this.active].value);
      else if (!open) this.#open("");
    } else if (event.key === "Escape" && open) {
      event.stopPropagation(); // closes the list only, not the drawer or a reply
      this.#close();
      this.input.select();
    }
  }
}
