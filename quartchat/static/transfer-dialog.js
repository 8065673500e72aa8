// The import and export dialog: the open conversation or all of them as JSON or Markdown, and
// an import of our JSON or ChatGPT's conversations.json. It reads and writes through the store
// like the rest of the page; the formats are transfer.js's.

import { MAX_BYTES, fileName, readImport, saveFile, toJSON, toMarkdown } from "./transfer.js";

const TYPES = { json: "application/json", md: "text/markdown" };

export class TransferDialog {
  /** `current()`: the open conversation. */
  constructor(dialog, { store, current }) {
    this.dialog = dialog;
    this.store = store;
    this.current = current;
    this.result = dialog.querySelector("#transfer-result");
    this.file = dialog.querySelector("#import-file");
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // the backdrop
      const button = event.target.closest("button[data-export]");
      if (button) this.#export(button.dataset.export, button.dataset.format);
    });
    this.file.addEventListener("change", () => this.#import(this.file.files[0]));
  }

  open() {
    const empty = !this.current().messages.length;
    for (const button of this.dialog.querySelectorAll('[data-export="one"]')) button.disabled = empty;
    this.result.textContent = "";
    this.dialog.showModal();
  }

  async #all() {
    const conversations = [];
    let after = null;
    do {
      const page = await this.store.list({ after, limit: 200 });
      for (const summary of page.items) {
        const conversation = await this.store.get(summary.id);
        if (conversation) conversations.push(conversation);
      }
      after = page.next;
    } while (after);
    return conversations;
  }

  async #export(which, format) {
    const conversations = which === "one" ? [this.current()] : await this.#all();
    if (!conversations.length || !conversations[0].messages.length) {
      this.#say("There is nothing to export yet.");
      return;
    }
    const text = format === "md" ? toMarkdown(conversations) : toJSON(conversations);
    const name = which === "one" ? fileName(conversations[0].title, format) : `quartchat-conversations.${format}`;
    saveFile(name, text, TYPES[format]);
    this.#say(`Exported ${conversations.length === 1 ? "1 conversation" : `${conversations.length} conversations`} as ${name}.`);
  }

  async #import(file) {
    if (!file) return;
    this.file.value = ""; // the same file can be chosen again
    if (file.size > MAX_BYTES) {
      this.#say(`That file is ${(file.size / 1024 / 1024).toFixed(0)} MB; files up to ${MAX_BYTES / 1024 / 1024} MB can be imported.`);
      return;
    }
    this.#say("Importing…");
    const { conversations, skipped, problems } = readImport(await file.text());
    let created = 0;
    let before = 0;
    if (conversations.length) {
      const saved = await this.store.importAll(conversations);
      created = saved.created;
      before = saved.skipped ?? 0;
      if (saved.full) problems.push("The browser's storage for this site is full: the rest could not be saved.");
    }
    const parts = [`Imported ${created === 1 ? "1 conversation" : `${created} conversations`}.`];
    if (before) parts.push(`${before === 1 ? "1 conversation was" : `${before} conversations were`} imported before and skipped.`);
    if (skipped) parts.push(`${skipped === 1 ? "1 item" : `${skipped} items`} could not be read and ${skipped === 1 ? "was" : "were"} skipped.`);
    this.#say([...parts, ...problems].join(" "));
  }

  #say(text) {
    this.result.textContent = text;
  }
}
