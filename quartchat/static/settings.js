// The settings of the open conversation: its model (the picker in the top bar, model-picker.js)
// and, in the settings panel, its sampling parameters and system prompt. Changes apply as they
// are made; a new conversation starts from the last model and parameters used (kept in
// localStorage), with an empty system prompt.

import { ModelPicker } from "./model-picker.js";

const DEFAULTS_KEY = "quartchat.v1.defaults";
const NUMBERS = ["temperature", "top_p", "max_tokens"];
const LABELS = { temperature: "Temperature", top_p: "Top P", max_tokens: "Max tokens" };

export function emptySettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(DEFAULTS_KEY) || "{}") ?? {};
  } catch {
    // Unreadable or blocked storage: server defaults it is.
  }
  return {
    model: typeof saved.model === "string" ? saved.model : "",
    temperature: saved.temperature ?? null,
    top_p: saved.top_p ?? null,
    max_tokens: saved.max_tokens ?? null,
    system: "",
  };
}

function rememberDefaults(settings) {
  const { model, temperature, top_p, max_tokens } = settings;
  try {
    localStorage.setItem(DEFAULTS_KEY, JSON.stringify({ model, temperature, top_p, max_tokens }));
  } catch {
    // Only a convenience; the conversation itself keeps its settings.
  }
}

/** The request-body fields for these settings; unset ones are left to the server. */
export function requestOptions(settings) {
  const options = {};
  if (settings.model) options.model = settings.model;
  for (const name of NUMBERS) if (settings[name] !== null && settings[name] !== undefined) options[name] = settings[name];
  return options;
}

export class SettingsPanel {
  /**
   * `picker`: the model picker's element in the top bar. `onChange(settings)` after each change;
   * `onProblems(texts)` with what is not sent (an out-of-range number, say), an empty list once
   * nothing is wrong.
   */
  constructor(dialog, { picker, onChange, onProblems = () => {} }) {
    this.dialog = dialog;
    this.onChange = onChange;
    this.onProblems = onProblems;
    this.problems = new Map(); // setting name -> what is wrong with it
    this.settings = null;
    this.defaultModel = document.body.dataset.defaultModel || "";
    this.form = dialog.querySelector("form");
    this.picker = new ModelPicker(picker, { onPick: (model) => this.#setModel(model) });
    this.system = dialog.querySelector("#set-system");
    this.inputs = Object.fromEntries(NUMBERS.map((name) => [name, dialog.querySelector(`#set-${name.replace("_", "-")}`)]));
    this.form.addEventListener("input", (event) => this.#changed(event.target));
    this.form.addEventListener("change", (event) => this.#changed(event.target));
    // A click on the backdrop (outside the panel) closes it, like the Escape key.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    this.setModels({ default: this.defaultModel, models: [] });
  }

  /** The server's `GET /api/models`: `{default, models, any_model, warnings}`. */
  setModels({ default: fallback, models, any_model: anyModel, warnings }) {
    this.defaultModel = fallback || this.defaultModel;
    this.picker.setModels({ defaultModel: this.defaultModel, models, anyModel, warnings });
  }

  modelName(settings) {
    return settings.model || this.defaultModel;
  }

  /** Show the settings of a conversation (the panel edits that object in place). */
  bind(settings) {
    this.settings = settings;
    this.picker.show(settings.model);
    this.system.value = settings.system;
    for (const name of NUMBERS) {
      this.inputs[name].value = settings[name] ?? "";
      this.#flag(name, null);
    }
    this.onProblems([...this.problems.values()]);
  }

  open() {
    this.dialog.showModal();
  }

  #changed(target) {
    if (!this.settings) return;
    if (target === this.system) this.settings.system = this.system.value;
    else {
      const name = NUMBERS.find((n) => this.inputs[n] === target);
      if (!name) return;
      // Empty means "server default". A value out of range (or half typed) is not sent either,
      // and says so, here and on the page: never dropped without a word.
      const problem = this.#problem(name, target);
      this.#flag(name, problem);
      this.settings[name] = problem || target.value === "" ? null : Number(target.value);
      this.onProblems([...this.problems.values()]);
    }
    rememberDefaults(this.settings);
    this.onChange(this.settings);
  }

  #setModel(model) {
    if (!this.settings) return;
    this.settings.model = model;
    rememberDefaults(this.settings);
    this.onChange(this.settings);
  }

  /** What is wrong with a number field's value, in words, or null. */
  #problem(name, field) {
    const { validity } = field;
    // A step is only the arrows' increment for the fractions (0.15 is a fine temperature); a
    // token count must be whole.
    const wrong = validity.badInput || validity.rangeOverflow || validity.rangeUnderflow || (name === "max_tokens" && validity.stepMismatch);
    if (!wrong) return null;
    const label = LABELS[name];
    const range = field.max ? `between ${field.min} and ${field.max}` : `a whole number of ${field.min} or more`;
    const value = validity.badInput ? "what is typed" : field.value;
    return `${label} must be ${range}, so ${value} is not sent (the server's default applies).`;
  }

  /** Mark a field wrong (its hint says why) or right again. */
  #flag(name, problem) {
    const field = this.inputs[name];
    const hint = this.dialog.querySelector(`#${field.getAttribute("aria-describedby")}`);
    hint.dataset.hint ??= hint.textContent;
    hint.textContent = problem ?? hint.dataset.hint;
    hint.classList.toggle("invalid", Boolean(problem));
    field.setAttribute("aria-invalid", String(Boolean(problem)));
    if (problem) this.problems.set(name, problem);
    else this.problems.delete(name);
  }
}
