// The browser's conversation store (localStorage), behind the interface store.js describes.

import { ID, problemOf, readConversation, readMessage, readSettings, readSummary, summaryOf } from "../schema.js";
import { streamChat } from "../api.js";
import { ConflictError, NotFoundError, StorageFullError, isQuotaError, newId, replyDone, replyFailed, titleFrom } from "./common.js";

// Keys: `quartchat.v1.` without accounts; `quartchat.v1.u<user id>.` with them, so people who
// share a browser never see each other's conversations.
const ROOT = "quartchat.v1.";
const LEGACY_KEY = "quartchat.history"; // the first version of the page kept one flat history
const PAGE = 50;
const HEARTBEAT_MS = 2000; // where Web Locks are missing (plain http on a LAN address)
const HEARTBEAT_STALE_MS = 3 * HEARTBEAT_MS;
const JSON_ESCAPED = /["\\\u0000-\u001f\u2028\u2029]/;
const MESSAGE_FIELDS = ["content", "status", "model", "usage", "finishReason", "error"];

// Most recently updated first; the id breaks ties, so the order (and a cursor) is total.
const before = (a, b) => a.updatedAt > b.updatedAt || (a.updatedAt === b.updatedAt && a.id > b.id);
const cursorOf = (summary) => `${summary.updatedAt}|${summary.id}`;
function parseCursor(cursor) {
  const bar = String(cursor).indexOf("|");
  return { updatedAt: Number(String(cursor).slice(0, bar)), id: String(cursor).slice(bar + 1) };
}
const sameSummary = (a, b) => a && b && a.title === b.title && a.updatedAt === b.updatedAt;

export class LocalStore {
  #summaries = null; // id -> Summary, read once, then kept in step with every write
  #sorted = null;
  #listeners = new Set();
  #runs = new Set(); // the replies this tab is writing
  #leaving = false; // the page is being closed or reloaded: its replies end with it

  constructor(storage, persistent, prefix = ROOT) {
    this.storage = storage;
    this.persistent = persistent;
    this.prefix = prefix;
    this.indexKey = `${prefix}index`;
    this.conversationPrefix = `${prefix}c.`;
    window.addEventListener("storage", (event) => this.#storageEvent(event));
    // Replies are saved every second; the latest text is saved when the page goes away.
    window.addEventListener("pagehide", () => {
      this.#leaving = true;
      for (const { conversation, reply, hooks } of this.#runs) hooks.saver.saveNow(conversation, reply);
    });
    window.addEventListener("pageshow", () => (this.#leaving = false)); // back from the back/forward cache
  }

  // ---- reading -----------------------------------------------------------------------------

  #parse(key) {
    const raw = this.storage.getItem(key);
    if (raw === null) return null;
    try {
      return { raw, value: JSON.parse(raw) };
    } catch {
      return { raw, value: undefined };
    }
  }

  /** The stored record of a conversation and its checked reading; null if absent or unreadable. */
  #read(id) {
    const entry = this.#parse(this.conversationPrefix + id);
    const read = entry && readConversation(entry.value);
    if (!read || read.conversation.id !== id) return null;
    // Stored is revision 1 at least (conversations saved before revisions have none): a
    // revision of 0 is what the page calls a conversation it has not saved yet.
    read.conversation.revision ||= 1;
    return { record: entry.value, ...read };
  }

  #conversationIds() {
    const ids = [];
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key?.startsWith(this.conversationPrefix)) ids.push(key.slice(this.conversationPrefix.length));
    }
    return ids;
  }

  #summaryMap() {
    if (this.#summaries) return this.#summaries;
    const index = this.#parse(this.indexKey)?.value;
    const listed = new Map();
    for (const entry of Array.isArray(index) ? index : []) {
      const summary = readSummary(entry);
      if (summary) listed.set(summary.id, summary);
    }
    const summaries = new Map();
    let repaired = false;
    for (const id of this.#conversationIds()) {
      let summary = listed.get(id);
      if (!summary) {
        // Self-healing: a conversation whose index update failed (or an index that is
        // unreadable) still shows up.
        const read = this.#read(id);
        if (!read) continue;
        summary = summaryOf(read.conversation);
        repaired = true;
      }
      summaries.set(id, summary);
    }
    this.#summaries = summaries;
    if (repaired || listed.size !== summaries.size) this.#writeIndex();
    return summaries;
  }

  #sortedSummaries() {
    this.#sorted ??= [...this.#summaryMap().values()].sort((a, b) => (before(a, b) ? -1 : 1));
    return this.#sorted;
  }

  /** The position in `sorted` of the first summary after `cursor`. */
  static #startAfter(sorted, cursor) {
    if (cursor === null || cursor === undefined) return 0;
    const mark = parseCursor(cursor);
    let low = 0;
    let high = sorted.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (before(mark, sorted[mid]) || (mark.updatedAt === sorted[mid].updatedAt && mark.id === sorted[mid].id)) high = mid;
      else low = mid + 1;
    }
    // `low` is the first entry at or after the mark; skip the mark itself.
    if (low < sorted.length && sorted[low].id === mark.id && sorted[low].updatedAt === mark.updatedAt) low += 1;
    return low;
  }

  async list({ after = null, limit = PAGE } = {}) {
    const sorted = this.#sortedSummaries();
    const start = LocalStore.#startAfter(sorted, after);
    const items = sorted.slice(start, start + limit).map((s) => ({ ...s }));
    return { items, next: start + limit < sorted.length && items.length ? cursorOf(items[items.length - 1]) : null };
  }

  async get(id) {
    return this.#read(id)?.conversation ?? null;
  }

  async search(text, { after = null, limit = PAGE } = {}) {
    const needle = text.trim().toLowerCase();
    if (!needle) return this.list({ after, limit });
    // The raw JSON is a cheap first test, unless the text holds characters JSON escapes.
    const rawTest = !JSON_ESCAPED.test(needle);
    const sorted = this.#sortedSummaries();
    const items = [];
    let i = LocalStore.#startAfter(sorted, after);
    for (; i < sorted.length && items.length < limit; i++) {
      const summary = sorted[i];
      if (summary.title.toLowerCase().includes(needle)) {
        items.push({ ...summary });
        continue;
      }
      if (rawTest && !(this.storage.getItem(this.conversationPrefix + summary.id) ?? "").toLowerCase().includes(needle)) continue;
      const read = this.#read(summary.id);
      const found = read?.conversation.messages.findLast((m) => m.content.toLowerCase().includes(needle));
      if (found) items.push({ ...summary, messageId: found.id }); // the newest message that has it
    }
    return { items, next: i < sorted.length && items.length ? cursorOf(items[items.length - 1]) : null };
  }

  async problems() {
    const stored = [];
    for (const id of this.#conversationIds()) {
      const raw = this.storage.getItem(this.conversationPrefix + id);
      if (raw !== null) stored.push([id, raw]);
    }
    let found;
    try {
      found = await checkInWorker(stored);
    } catch {
      found = await checkHere(stored); // no module workers here: in slices on this thread
    }
    const raws = new Map(stored);
    const entries = [];
    let count = 0;
    for (const { id, reason, whole, skipped } of found) {
      count += whole ? 1 : skipped;
      entries.push({ key: this.conversationPrefix + id, value: raws.get(id), reason });
      // Listed by the index, which is trusted at the start for speed: not any more.
      if (whole && this.#summaries?.delete(id)) {
        this.#sorted = null;
        this.#emit({ id, origin: "here", removed: true });
      }
    }
    return { count, entries };
  }

  // ---- writing -----------------------------------------------------------------------------

  #write(key, value) {
    try {
      this.storage.setItem(key, value);
    } catch (error) {
      if (isQuotaError(error)) throw new StorageFullError();
      throw error;
    }
  }

  #writeIndex() {
    try {
      this.#write(this.indexKey, JSON.stringify([...this.#summaryMap().values()]));
    } catch (error) {
      // The conversation itself is saved; a missing index entry is rebuilt at the next start.
      if (!(error instanceof StorageFullError)) throw error;
    }
  }

  /**
   * Run a read-check-write now, in one go: localStorage is synchronous, so nothing of this tab
   * runs in between, and a write made just before the page closes is not lost.
   */
  static #now(fn) {
    try {
      return Promise.resolve(fn());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #saved(conversation, record) {
    const summary = summaryOf(conversation);
    const summaries = this.#summaryMap();
    const changed = !sameSummary(summaries.get(conversation.id), summary);
    if (changed) {
      summaries.set(conversation.id, summary);
      this.#sorted = null;
      this.#writeIndex();
    }
    this.#emit({ id: conversation.id, origin: "here", summary: changed ? { ...summary } : undefined });
    return { revision: record.revision, updatedAt: conversation.updatedAt };
  }

  /** The stored record, in tree form, with known fields cleaned and unreadable messages kept. */
  static #record(read) {
    const { record, conversation } = read;
    const clean = new Map(conversation.messages.map((m) => [m.id, m]));
    record.messages = record.messages.map((item) => {
      const message = readMessage(item);
      const kept = message && clean.get(message.id);
      if (!kept) return item; // unreadable: kept as it is, for the person to export
      clean.delete(message.id);
      return kept;
    });
    const { title, createdAt, updatedAt, settings, leafId } = conversation;
    return Object.assign(record, { title, createdAt, updatedAt, settings, leafId });
  }

  /** Change a stored conversation if it is still at `revision`. */
  #change(id, revision, apply) {
    return LocalStore.#now(() => {
      const read = this.#read(id);
      if (!read) throw new NotFoundError(id);
      const current = read.conversation.revision;
      if (revision !== current) throw new ConflictError(current);
      const record = LocalStore.#record(read);
      if (apply(read.conversation, record) === false) return { revision: current, updatedAt: read.conversation.updatedAt };
      record.title = read.conversation.title;
      record.updatedAt = read.conversation.updatedAt;
      record.leafId = read.conversation.leafId;
      record.settings = read.conversation.settings;
      record.revision = current + 1;
      this.#write(this.conversationPrefix + id, JSON.stringify(record));
      return this.#saved(read.conversation, record);
    });
  }

  #checked(conversation) {
    const read = readConversation(conversation); // copies: nothing of the caller's is kept
    if (!read) throw new TypeError("Not a conversation");
    return read.conversation;
  }

  async create(conversation) {
    const clean = this.#checked(conversation);
    return LocalStore.#now(() => {
      const existing = this.#read(clean.id);
      if (existing || this.storage.getItem(this.conversationPrefix + clean.id) !== null) throw new ConflictError(existing?.conversation.revision ?? 0);
      clean.revision += 1;
      this.#write(this.conversationPrefix + clean.id, JSON.stringify(clean));
      return this.#saved(clean, clean);
    });
  }

  async replace(conversation, { revision }) {
    const clean = this.#checked(conversation);
    return LocalStore.#now(() => {
      const read = this.#read(clean.id);
      if (!read) throw new NotFoundError(clean.id);
      if (read.conversation.revision !== revision) throw new ConflictError(read.conversation.revision);
      // Unreadable messages of the stored version are kept, whatever the caller holds.
      const unreadable = LocalStore.#record(read).messages.filter((m) => !readMessage(m));
      const record = { ...clean, messages: [...clean.messages, ...unreadable], revision: revision + 1 };
      this.#write(this.conversationPrefix + clean.id, JSON.stringify(record));
      return this.#saved(clean, record);
    });
  }

  async appendMessage(id, message, { revision }) {
    const clean = readMessage(message);
    if (!clean) throw new TypeError("Not a message");
    return this.#change(
      id,
      revision,
      (conversation, record) => {
        const existing = conversation.messages.find((m) => m.id === clean.id);
        if (existing) {
          // A second try of an append that was saved: nothing to do.
          if (existing.content === clean.content && existing.parentId === clean.parentId) return false;
          throw new ConflictError(revision);
        }
        if (clean.parentId !== null && !conversation.messages.some((m) => m.id === clean.parentId)) throw new NotFoundError(clean.parentId);
        record.messages.push(clean);
        conversation.leafId = clean.id;
        conversation.updatedAt = Math.max(Date.now(), conversation.updatedAt + 1);
      },
    );
  }

  async updateMessage(id, messageId, fields, { revision }) {
    const changes = {};
    for (const name of MESSAGE_FIELDS) if (Object.hasOwn(fields, name)) changes[name] = fields[name];
    return this.#change(
      id,
      revision,
      (conversation, record) => {
        const readable = new Set(conversation.messages);
        const index = record.messages.findIndex((m) => readable.has(m) && m.id === messageId);
        if (index < 0) throw new NotFoundError(messageId);
        const updated = readMessage({ ...record.messages[index], ...changes });
        if (!updated) throw new TypeError("Not a message");
        record.messages[index] = updated;
      },
    );
  }

  async update(id, fields, { revision }) {
    return this.#change(
      id,
      revision,
      (conversation) => {
        if (typeof fields.title === "string" && fields.title.trim()) conversation.title = fields.title.trim().slice(0, 300);
        if (fields.settings) conversation.settings = readSettings(fields.settings);
        if (fields.leafId !== undefined) {
          if (!conversation.messages.some((m) => m.id === fields.leafId)) throw new NotFoundError(fields.leafId);
          conversation.leafId = fields.leafId;
        }
      },
    );
  }

  /** At once (no lock: nothing is checked), so a page closed right after still removed it. */
  async remove(id) {
    this.storage.removeItem(this.conversationPrefix + id);
    if (this.#summaryMap().delete(id)) {
      this.#sorted = null;
      this.#writeIndex();
    }
    this.#emit({ id, origin: "here", removed: true });
  }

  async importAll(conversations) {
    const summaries = this.#summaryMap();
    let created = 0;
    let skipped = 0;
    let full = false;
    for (const conversation of conversations) {
      const clean = this.#checked(conversation);
      if (!ID.test(clean.id)) continue;
      if (this.storage.getItem(this.conversationPrefix + clean.id) !== null) {
        skipped += 1; // imported before (or this store's own, exported): kept as it is
        continue;
      }
      clean.revision += 1;
      try {
        this.#write(this.conversationPrefix + clean.id, JSON.stringify(clean));
      } catch (error) {
        if (!(error instanceof StorageFullError)) throw error;
        full = true;
        break;
      }
      summaries.set(clean.id, summaryOf(clean));
      created += 1;
    }
    this.#sorted = null;
    this.#writeIndex(); // once for the lot, not once per conversation
    this.#emit({ all: true, origin: "here" });
    return { created, skipped, full };
  }

  // ---- drafts --------------------------------------------------------------------------------

  async draft(id) {
    return this.storage.getItem(`${this.prefix}draft.${id ?? "new"}`) ?? "";
  }

  /** Synchronous underneath, so it also works while the page is being closed. */
  async setDraft(id, text) {
    const key = `${this.prefix}draft.${id ?? "new"}`;
    try {
      if (text) this.storage.setItem(key, text);
      else this.storage.removeItem(key);
    } catch {
      // A full storage: the draft lives on in the text box until the page closes.
    }
  }

  // ---- turns: this tab asks the upstream (/api/chat/stream) and saves the reply as it comes ------

  turn(conversation, turn, hooks) {
    const controller = new AbortController();
    const run = { conversation, reply: null, hooks, stop: () => controller.abort(), detach: () => controller.abort() };
    run.ended = this.#ask(run, turn, controller.signal);
    return run;
  }

  /** Another tab's reply cannot be read from here (only its saves): see beingWritten(). */
  follow() {
    return null;
  }

  async #ask(run, turn, signal) {
    const { conversation, hooks } = run;
    const { saver } = hooks;
    const beside = conversation.messages.find((m) => m.id === turn.messageId);
    let parentId = beside?.parentId ?? null; // a new reply sits beside the old one
    if (turn.kind !== "regenerate") {
      // A question answers the version shown; an edited one is a new version beside the old.
      const question = { id: newId(), parentId: turn.kind === "send" ? conversation.leafId : parentId, role: "user", content: turn.content, createdAt: Date.now() };
      conversation.messages.push(question);
      conversation.leafId = question.id;
      hooks.onAdded();
      // Saved before the reply is asked for: if another tab said something meanwhile, a new
      // question goes after it, and the reply is asked with that context.
      await saver.append(conversation, question, { follow: turn.kind === "send" });
      if (conversation.deleted) return;
      parentId = question.id;
    }
    const body = hooks.request(parentId);
    const reply = { id: newId(), parentId, role: "assistant", content: "", status: "streaming", createdAt: Date.now(), model: turn.model ?? null };
    conversation.messages.push(reply);
    conversation.leafId = reply.id;
    run.reply = reply;
    hooks.onAdded();
    // Other tabs tell a reply being written from one cut off by whether this is held.
    const release = await this.writing(reply.id);
    this.#runs.add(run);
    saver.append(conversation, reply); // the question and the title are kept even if the reply never comes
    try {
      const done = await streamChat(body, {
        signal,
        onDelta(delta) {
          reply.content += delta;
          hooks.onDelta();
          saver.updateSoon(conversation, reply);
        },
      });
      replyDone(reply, done);
    } catch (error) {
      // The page is closing (or reloading), and its fetch died with it: not a dropped
      // connection. Left "streaming", the next page finds nobody writing it and says it was cut
      // off when the page was closed.
      if (!this.#leaving || error.name === "AbortError") replyFailed(reply, error);
    } finally {
      this.#runs.delete(run);
      await saver.updateMessage(conversation, reply);
      release();
    }
  }

  // ---- replies being written -----------------------------------------------------------------

  #writerKey(messageId) {
    return `${this.prefix}writing.${messageId}`;
  }

  async writing(messageId) {
    const name = this.#writerKey(messageId);
    if (navigator.locks) {
      // The lock is held until released, or until this tab is gone: the browser lets go of a
      // closed or crashed tab's locks, which is what tells other tabs that the reply is cut off.
      let release;
      const held = new Promise((resolve) => (release = resolve));
      await new Promise((granted) => navigator.locks.request(name, () => (granted(), held)));
      return release;
    }
    const beat = () => {
      try {
        this.storage.setItem(name, String(Date.now()));
      } catch {
        // Full: other tabs will take the reply for cut off; it still saves when it ends.
      }
    };
    beat();
    const timer = setInterval(beat, HEARTBEAT_MS);
    return () => {
      clearInterval(timer);
      this.storage.removeItem(name);
    };
  }

  async beingWritten(messageIds) {
    if (navigator.locks) {
      const { held } = await navigator.locks.query();
      const names = new Set(held.map((lock) => lock.name));
      return new Set(messageIds.filter((id) => names.has(this.#writerKey(id))));
    }
    const now = Date.now();
    return new Set(messageIds.filter((id) => now - Number(this.storage.getItem(this.#writerKey(id)) ?? 0) < HEARTBEAT_STALE_MS));
  }

  async whenWritten(messageId) {
    if (navigator.locks) {
      // Granted once the writer lets go; released again at once.
      await navigator.locks.request(this.#writerKey(messageId), () => {});
      return;
    }
    while ((await this.beingWritten([messageId])).size) await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS));
  }

  // ---- changes -------------------------------------------------------------------------------

  subscribe(callback) {
    this.#listeners.add(callback);
    return () => this.#listeners.delete(callback);
  }

  #emit(change) {
    queueMicrotask(() => {
      for (const listener of this.#listeners) listener(change);
    });
  }

  #storageEvent(event) {
    if (event.storageArea !== this.storage) return;
    if (event.key === null) {
      this.#summaries = null;
      this.#sorted = null;
      this.#emit({ all: true, origin: "elsewhere" });
    } else if (event.key === this.indexKey && this.#summaries) {
      // Another tab's index: tell what it changed, entry by entry.
      const before = this.#summaries;
      this.#summaries = null;
      this.#sorted = null;
      const after = this.#summaryMap();
      for (const [id, summary] of after) if (!sameSummary(before.get(id), summary)) this.#emit({ id, origin: "elsewhere", summary: { ...summary } });
      for (const id of before.keys()) if (!after.has(id)) this.#emit({ id, origin: "elsewhere", removed: true });
    } else if (event.key.startsWith(this.conversationPrefix)) {
      const id = event.key.slice(this.conversationPrefix.length);
      if (event.newValue === null) {
        if (this.#summaries?.delete(id)) this.#sorted = null;
        this.#emit({ id, origin: "elsewhere", removed: true });
      } else this.#emit({ id, origin: "elsewhere", content: true });
    }
  }
}

/** The stored entries (`[id, raw JSON]`) that do not read as conversations, checked in a worker. */
function checkInWorker(entries) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL("../check-worker.js", import.meta.url), { type: "module" });
    worker.addEventListener("message", ({ data }) => {
      worker.terminate();
      resolve(data);
    });
    worker.addEventListener("error", (event) => {
      event.preventDefault();
      worker.terminate();
      reject(new Error("The check could not run in a worker"));
    });
    worker.postMessage(entries);
  });
}

/** The same check on this thread, yielding every few milliseconds. */
async function checkHere(entries) {
  const found = [];
  let sliceStart = performance.now();
  for (const [id, raw] of entries) {
    const problem = problemOf(id, raw);
    if (problem) found.push({ id, ...problem });
    if (performance.now() - sliceStart > 8) {
      await new Promise((resolve) => setTimeout(resolve));
      sliceStart = performance.now();
    }
  }
  return found;
}

function memoryStorage() {
  const map = new Map();
  return {
    get length() {
      return map.size;
    },
    key: (i) => [...map.keys()][i] ?? null,
    getItem: (k) => (map.has(k) ? map.get(k) : null),
    setItem: (k, v) => map.set(k, String(v)),
    removeItem: (k) => map.delete(k),
  };
}

function usableLocalStorage() {
  try {
    const probe = `${ROOT}probe`;
    localStorage.setItem(probe, "1");
    localStorage.removeItem(probe);
    return localStorage;
  } catch (error) {
    // A full storage still works for reading: use it, and let writes report the quota.
    if (isQuotaError(error)) return localStorage;
    return null;
  }
}

async function migrateLegacyHistory(store, newConversation) {
  let messages;
  try {
    messages = JSON.parse(localStorage.getItem(LEGACY_KEY) || "null");
  } catch {
    messages = null;
  }
  if (!Array.isArray(messages)) return;
  if (messages.length) {
    const conversation = newConversation();
    conversation.messages = messages
      .filter((m) => m && typeof m.content === "string")
      .map((m) => ({
        id: newId(),
        role: m.role === "user" ? "user" : "assistant",
        content: m.content,
        status: "done",
        createdAt: conversation.createdAt,
      }));
    const first = conversation.messages.find((m) => m.role === "user");
    if (first) conversation.title = titleFrom(first.content);
    await store.create(conversation); // throws when full: the old key then stays for a later try
  }
  localStorage.removeItem(LEGACY_KEY);
}

/**
 * The first user to log in on a browser that was used without accounts takes its conversations
 * over (they were that person's), so nothing is lost when accounts are turned on. Entries move
 * as they are stored, unreadable ones too.
 */
function adoptConversationsWithoutOwner(storage, prefix) {
  const unowned = `${ROOT}c.`;
  const keys = [];
  for (let i = 0; i < storage.length; i++) {
    const key = storage.key(i);
    if (key?.startsWith(unowned)) keys.push(key);
  }
  for (const key of keys) {
    const target = `${prefix}c.${key.slice(unowned.length)}`;
    if (storage.getItem(target) === null) storage.setItem(target, storage.getItem(key)); // throws when full: adopt the rest later
    storage.removeItem(key);
  }
  if (keys.length) storage.removeItem(`${ROOT}index`);
}

export async function openLocalStore(newConversation, owner) {
  const storage = usableLocalStorage();
  const prefix = owner === null ? ROOT : `${ROOT}u${owner}.`;
  if (storage && owner !== null) {
    try {
      adoptConversationsWithoutOwner(storage, prefix);
    } catch (error) {
      if (!isQuotaError(error)) throw error;
    }
  }
  const store = new LocalStore(storage ?? memoryStorage(), storage !== null, prefix);
  if (storage) {
    try {
      await migrateLegacyHistory(store, newConversation);
    } catch (error) {
      if (!(error instanceof StorageFullError)) throw error;
    }
  }
  return store;
}
