// Conversation storage: the only module that knows where conversations live.
//
// The rest of the UI uses this interface and nothing else; every method returns a Promise, so a
// server-backed (or IndexedDB) store can take this one's place without touching the UI:
//
//   list()              -> [{id, title, updatedAt}], most recently updated first
//   get(id)             -> the whole conversation, or null
//   put(conversation)   -> saves it whole; rejects with StorageFullError when out of space,
//                          in which case the previously saved version is left as it was
//   remove(id)
//   search(text)        -> ids of conversations whose title or messages contain text (any case)
//   subscribe(callback) -> callback() whenever another tab changed the stored conversations
//   persistent          -> false when nothing survives a reload (storage blocked)
//
// A conversation is {id, title, createdAt, updatedAt, settings, messages: [...]}, plain JSON.
//
// This implementation uses localStorage, one key per conversation plus a small index of
// summaries. Why not IndexedDB: a conversation is saved whole, and `setItem` replaces a value
// atomically, so a failed write (quota) can never leave a half-written conversation; the quota
// error is synchronous and immediate, so the user is told at once; and the ~5 M characters a
// browser allows hold thousands of messages. The interface being async keeps the move open.

// Keys: `quartchat.v1.` without accounts; `quartchat.v1.u<user id>.` with them, so people who
// share a browser never see each other's conversations.
const ROOT = "quartchat.v1.";
const LEGACY_KEY = "quartchat.history"; // the first version of the page kept one flat history

export class StorageFullError extends Error {
  constructor() {
    super("Browser storage is full");
    this.name = "StorageFullError";
  }
}

function isQuotaError(error) {
  return (
    error instanceof DOMException &&
    (error.name === "QuotaExceededError" ||
      error.name === "NS_ERROR_DOM_QUOTA_REACHED" ||
      error.code === 22 ||
      error.code === 1014)
  );
}

/** A unique id. (crypto.randomUUID needs a secure context; a LAN address over http is not one.) */
export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Date.now().toString(36) + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function summaryOf(conversation) {
  return {
    id: conversation.id,
    title: conversation.title,
    updatedAt: conversation.updatedAt,
  };
}

class LocalStore {
  constructor(storage, persistent, prefix = ROOT) {
    this.storage = storage;
    this.persistent = persistent;
    this.prefix = prefix;
    this.indexKey = `${prefix}index`;
    this.conversationPrefix = `${prefix}c.`;
  }

  #write(key, value) {
    try {
      this.storage.setItem(key, value);
    } catch (error) {
      if (isQuotaError(error)) throw new StorageFullError();
      throw error;
    }
  }

  #readJSON(key) {
    const raw = this.storage.getItem(key);
    if (raw === null) return null;
    try {
      return JSON.parse(raw);
    } catch {
      return null;
    }
  }

  #index() {
    const index = this.#readJSON(this.indexKey);
    return Array.isArray(index) ? index : [];
  }

  async list() {
    const stored = new Set();
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key?.startsWith(this.conversationPrefix)) stored.add(key.slice(this.conversationPrefix.length));
    }
    const index = this.#index().filter((s) => stored.delete(s.id));
    // Self-healing: a conversation written just before its index update failed still shows up.
    for (const id of stored) {
      const conversation = this.#readJSON(this.conversationPrefix + id);
      if (conversation?.id === id) index.push(summaryOf(conversation));
    }
    return index.sort((a, b) => b.updatedAt - a.updatedAt);
  }

  async get(id) {
    const conversation = this.#readJSON(this.conversationPrefix + id);
    return conversation && Array.isArray(conversation.messages) ? conversation : null;
  }

  async put(conversation) {
    // The conversation first: if it does not fit, nothing at all has changed.
    this.#write(this.conversationPrefix + conversation.id, JSON.stringify(conversation));
    const index = this.#index().filter((s) => s.id !== conversation.id);
    index.push(summaryOf(conversation));
    this.#write(this.indexKey, JSON.stringify(index));
  }

  async remove(id) {
    this.storage.removeItem(this.conversationPrefix + id);
    const index = this.#index().filter((s) => s.id !== id);
    this.#write(this.indexKey, JSON.stringify(index));
  }

  subscribe(callback) {
    window.addEventListener("storage", (event) => {
      if (event.storageArea === this.storage && (event.key === null || event.key.startsWith(this.prefix))) callback();
    });
  }

  async search(text) {
    const needle = text.trim().toLowerCase();
    if (!needle) return (await this.list()).map((s) => s.id);
    const ids = [];
    for (const summary of await this.list()) {
      const raw = this.storage.getItem(this.conversationPrefix + summary.id) ?? "";
      // Cheap test on the raw JSON first; parse only the candidates to rule out matches that
      // exist only in JSON syntax or in fields the user never sees.
      if (!raw.toLowerCase().includes(needle)) continue;
      const conversation = await this.get(summary.id);
      if (!conversation) continue;
      const texts = [conversation.title, ...conversation.messages.map((m) => m.content)];
      if (texts.some((t) => String(t).toLowerCase().includes(needle))) ids.push(summary.id);
    }
    return ids;
  }
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
    // A full storage still works for reading: use it, and let put() report the quota.
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
    await store.put(conversation); // throws when full: the old key then stays for a later try
  }
  localStorage.removeItem(LEGACY_KEY);
}

/** A title from the first message: its first line, trimmed to about 60 characters. */
export function titleFrom(text) {
  const line = text.trim().split("\n")[0].replace(/\s+/g, " ");
  return line.length > 60 ? `${line.slice(0, 57).trimEnd()}…` : line || "New chat";
}

/**
 * The first user to log in on a browser that was used without accounts takes its conversations
 * over (they were that person's), so nothing is lost when accounts are turned on.
 */
async function adoptConversationsWithoutOwner(storage, store) {
  const unowned = new LocalStore(storage, true);
  for (const summary of await unowned.list()) {
    const conversation = await unowned.get(summary.id);
    if (conversation) await store.put(conversation); // throws when full: adopt the rest later
    await unowned.remove(summary.id);
  }
}

/**
 * The conversation store for this browser, and for `owner` (the logged-in user's id; null
 * without accounts). `newConversation` builds an empty conversation (used to import the first
 * version's single history).
 */
export async function openStore(newConversation, owner = null) {
  const storage = usableLocalStorage();
  const prefix = owner === null ? ROOT : `${ROOT}u${owner}.`;
  const store = new LocalStore(storage ?? memoryStorage(), storage !== null, prefix);
  if (storage) {
    try {
      await migrateLegacyHistory(store, newConversation);
      if (owner !== null) await adoptConversationsWithoutOwner(storage, store);
    } catch (error) {
      if (!(error instanceof StorageFullError)) throw error;
    }
  }
  return store;
}
