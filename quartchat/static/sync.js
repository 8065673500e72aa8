// Saving this tab's changes, and taking in other tabs' changes, for the conversations this tab
// holds (the open one, and any whose reply is still streaming here).
//
// Changes to one conversation are saved one at a time, each against the revision this tab last
// saw. When another tab (or device) saved first, the store refuses the write; the conversation
// is then reloaded, merged with what this tab holds, and the change is applied again. Messages
// are never removed from a conversation (a new version is a new message), so merging is a union:
// nothing either tab wrote is dropped, and a message that only this tab has is saved again.

import { ConflictError, NotFoundError, StorageFullError } from "./store.js";
import { Tree } from "./tree.js";

const UPDATE_EVERY_MS = 1000; // a streaming reply is saved at most once a second, and when it ends
const MAX_TRIES = 5;
const REPLY_FIELDS = ["content", "status", "model", "usage", "finishReason", "error"];

const same = (a, b) => a === b || JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function differs(mine, theirs) {
  return mine.parentId !== theirs.parentId || mine.content !== theirs.content || REPLY_FIELDS.some((f) => !same(mine[f], theirs[f]));
}

/**
 * Take `fresh` (the stored version) into `live` (this tab's), in place, so views holding `live`
 * keep working. Messages this tab is writing (`mine`) keep this tab's text. Answers what changed:
 * {messages: added or changed messages, structure, title, settings, missing: messages only
 * this tab has}.
 */
export function merge(live, fresh, mine) {
  const report = { messages: [], structure: false, title: false, settings: false, missing: [] };
  if (live.title !== fresh.title) {
    live.title = fresh.title;
    report.title = true;
  }
  if (!same(live.settings, fresh.settings)) {
    Object.assign(live.settings, fresh.settings); // the settings panel edits this very object
    report.settings = true;
  }
  live.createdAt = fresh.createdAt;
  live.updatedAt = fresh.updatedAt;
  live.revision = fresh.revision;
  const held = new Map(live.messages.map((m) => [m.id, m]));
  for (const message of fresh.messages) {
    const have = held.get(message.id);
    held.delete(message.id);
    if (!have) {
      live.messages.push(message);
      report.messages.push(message);
      report.structure = true;
    } else if (have.status && have.status !== "streaming" && message.status === "streaming") {
      // A copy read while the reply was still being written: a finished reply never goes back.
    } else if (!mine.has(message.id) && differs(have, message)) {
      if (have.parentId !== message.parentId) report.structure = true;
      Object.assign(have, message);
      report.messages.push(have);
    }
  }
  report.missing = [...held.values()];
  // This tab's leaf stays when it is a message the store has not got yet (it is being saved).
  if (live.leafId !== fresh.leafId && !held.has(live.leafId)) {
    live.leafId = fresh.leafId;
    report.structure = true;
  }
  return report;
}

export class Saver {
  #queues = new Map(); // conversation id -> the last queued save, so saves run in order
  #timers = new Map(); // message id -> a pending update of a streaming reply

  /**
   * `mine()`: ids of the replies this tab is writing. Callbacks: `onMerged(conversation,
   * report)` after another tab's changes were taken in; `onSaved(conversation)`;
   * `onFull(conversation)` when storage is full (the conversation goes on in memory);
   * `onGone(conversation)` when it was deleted elsewhere; `onError(conversation, error)`.
   */
  constructor(store, { mine, onMerged, onSaved, onFull, onGone, onError }) {
    this.store = store;
    Object.assign(this, { mine, onMerged, onSaved, onFull, onGone, onError });
  }

  /**
   * Save a message that is already in `conversation.messages`. `follow`: a new question that
   * should come after whatever was said meanwhile in another tab (not an edit, which is a branch
   * on purpose). Resolves true once saved, false if it could not be (full, or deleted).
   */
  append(conversation, message, { follow = false } = {}) {
    const parentBefore = message.parentId;
    return this.#queue(conversation, {
      messageId: message.id,
      write: (revision) => this.store.appendMessage(conversation.id, message, { revision }),
      rebase: (leaf) => {
        if (!follow || !leaf || leaf === message.id || leaf === message.parentId) return false;
        // Another tab went on from the same place: ask after its latest message instead.
        const tree = new Tree(conversation.messages);
        if (parentBefore === null || tree.path(leaf).some((m) => m.id === parentBefore)) {
          message.parentId = leaf;
          conversation.leafId = message.id;
          return true;
        }
        return false;
      },
    });
  }

  /** Save a reply's current text and state now (any pending update is folded in). */
  updateMessage(conversation, message) {
    clearTimeout(this.#timers.get(message.id));
    this.#timers.delete(message.id);
    return this.#queue(conversation, {
      write: (revision) => {
        const fields = Object.fromEntries(REPLY_FIELDS.filter((f) => f in message).map((f) => [f, message[f]]));
        return this.store.updateMessage(conversation.id, message.id, fields, { revision });
      },
    });
  }

  /** Save a streaming reply within a second; many calls meanwhile cost one write. */
  updateSoon(conversation, message) {
    if (!this.#timers.has(message.id)) this.#timers.set(message.id, setTimeout(() => this.updateMessage(conversation, message), UPDATE_EVERY_MS));
  }

  /**
   * Save the title, settings or leaf as `conversation` has them now. Taking in a newer version
   * (a refused write) does not undo this change: it is applied again on top.
   */
  update(conversation, names) {
    const values = Object.fromEntries(names.map((n) => [n, structuredClone(conversation[n])]));
    return this.#queue(conversation, {
      write: (revision) => this.store.update(conversation.id, values, { revision }),
      rebase: () => {
        for (const name of names) {
          if (name === "settings") Object.assign(conversation.settings, values.settings); // the panel edits this object
          else conversation[name] = values[name];
        }
        return { title: names.includes("title"), settings: names.includes("settings") };
      },
    });
  }

  /** Take in the stored version (another tab changed it), in turn with this tab's saves. */
  reload(conversation) {
    return this.#queue(conversation, { reload: true });
  }

  /**
   * The page is going away: write a streaming reply's latest text at once, outside the queue
   * (no later task will run). Best effort.
   */
  saveNow(conversation, message) {
    clearTimeout(this.#timers.get(message.id));
    const fields = Object.fromEntries(REPLY_FIELDS.map((f) => [f, message[f]]));
    this.store.updateMessage(conversation.id, message.id, fields, { revision: conversation.revision }).catch(() => {});
  }

  #queue(conversation, change) {
    const run = (this.#queues.get(conversation.id) ?? Promise.resolve()).then(() => this.#run(conversation, change));
    this.#queues.set(
      conversation.id,
      run.catch(() => {}),
    );
    return run;
  }

  /** Merge the stored version in; `always`, even when it is not newer. Answers its leaf. */
  async #take(conversation, always = false, pending = null) {
    const fresh = await this.store.get(conversation.id);
    if (!fresh) throw new NotFoundError(conversation.id);
    // An older copy than this tab's is not taken in; the same revision is (two tabs that
    // raced to write the same revision both have it, and a merge is how the loser finds out).
    if (!always && fresh.revision < conversation.revision) return fresh.leafId;
    const report = merge(conversation, fresh, this.mine());
    // A message this tab has but the store lacks was lost (a write raced another tab's, or did
    // not fit): save the whole conversation again.
    if (report.missing.some((m) => m.id !== pending)) conversation.unsaved = true;
    if (report.messages.length || report.structure || report.title || report.settings) this.onMerged(conversation, report);
    return fresh.leafId;
  }

  async #run(conversation, change) {
    if (conversation.deleted) return false;
    try {
      if (change.reload) {
        if (conversation.revision > 0) await this.#take(conversation);
        if (!conversation.unsaved) return true;
        // Something of this tab's is missing from what is stored: it is written whole below.
      }
      for (let tries = 0; ; tries++) {
        try {
          let saved;
          if (conversation.revision === 0) saved = await this.store.create(conversation);
          else if (conversation.unsaved) saved = await this.store.replace(conversation, { revision: conversation.revision });
          else saved = await change.write(conversation.revision);
          conversation.revision = saved.revision;
          conversation.updatedAt = saved.updatedAt;
          conversation.unsaved = false;
          this.onSaved(conversation);
          return true;
        } catch (error) {
          if (tries >= MAX_TRIES || conversation.deleted) throw error;
          if (error instanceof ConflictError) {
            if (conversation.revision === 0) conversation.unsaved = true; // the id exists: a second try of a create
          } else if (!(error instanceof NotFoundError && conversation.revision > 0)) throw error;
          else conversation.unsaved = true; // what it builds on is missing: write it whole (or find it gone)
          const leaf = await this.#take(conversation, true, change.messageId);
          const rebased = change.rebase?.(leaf);
          if (rebased) this.onMerged(conversation, { messages: [], structure: true, missing: [], ...(rebased === true ? {} : rebased) });
        }
      }
    } catch (error) {
      if (error instanceof StorageFullError) {
        conversation.unsaved = true; // the next save writes it whole
        this.onFull(conversation);
      } else if (error instanceof NotFoundError) {
        if (!conversation.deleted) this.onGone(conversation);
      } else this.onError(conversation, error);
      return false;
    }
  }
}
