// The conversation store of a logged-in user: the server's /api/conversations behind store.js's
// interface (see its header), chosen by openStore when there is an owner.
//
// What differs from the browser's store:
// - The server writes messages itself. Asking is one call, `ask()`, which saves the question,
//   saves the reply as it streams and streams it back; appendMessage and updateMessage are not
//   for this store. A reply the server is writing has status `streaming`; one whose writer went
//   away (the page closed, the connection dropped, the process died) is `interrupted`, which the
//   page shows as an error ("This reply was interrupted.") with its text so far.
// - Ids are the server's. A new conversation gets its id from `create()` (the page's own id goes
//   along as `client_id`, so a retried create makes one conversation).
// - Changes made elsewhere (another device, another tab) come from polling the change feed every
//   few seconds, at once when the page comes back into view, and while a reply is being written
//   elsewhere, from polling that conversation.
// - A write that cannot reach the server (offline, or a gateway error) is not given up: it is
//   retried every few seconds and at once when the browser is back online, and `onPending`
//   listeners hear how many writes are waiting, so the page can say so. Writes of one
//   conversation are queued by the caller (sync.js), so they still land in order.
// - Drafts and unreadable entries stay in this browser (the local store underneath).

import { ChatError, errorFromResponse, streamReply } from "./api.js";
import { readConversation } from "./schema.js";
import { ConflictError, NotFoundError } from "./store.js";

const POLL_MS = 3000;
const RETRY_MS = 3000;
const PAGE = 50;
const TRANSIENT = new Set([502, 503, 504]); // a proxy or a restarting service: worth trying again
const EPOCH = "1970-01-01T00:00:00+00:00";

const time = (iso) => Date.parse(iso);

function summaryFrom(item) {
  return { id: item.id, title: item.title, updatedAt: time(item.updated_at) };
}

/** The server's settings as the page keeps them, and back. */
function settingsFrom(settings = {}) {
  return {
    model: settings.model ?? "",
    temperature: settings.temperature ?? null,
    top_p: settings.top_p ?? null,
    max_tokens: settings.max_tokens ?? null,
    system: settings.system ?? "",
  };
}

function settingsTo(settings = {}) {
  const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);
  return {
    model: settings.model || null,
    system: settings.system ?? "",
    temperature: number(settings.temperature),
    top_p: number(settings.top_p),
    max_tokens: Number.isInteger(settings.max_tokens) ? settings.max_tokens : null,
  };
}

/**
 * A conversation of the API as the page's data model (checked like anything read). `waits`:
 * replies refused by a rate limit, as this browser heard it (see ServerStore's #waits).
 */
function conversationFrom(raw, waits = {}) {
  const read = readConversation({
    id: raw.id,
    title: raw.title,
    createdAt: time(raw.created_at),
    updatedAt: time(raw.updated_at),
    revision: raw.revision,
    settings: settingsFrom(raw.settings),
    leafId: raw.leaf_id,
    messages: raw.messages.map((m) => ({
      id: m.id,
      parentId: m.parent_id,
      role: m.role,
      content: m.content,
      createdAt: time(m.created_at),
      status: m.status, // complete -> done, interrupted -> error (schema.js)
      model: m.model,
      usage: m.usage,
      finishReason: m.finish_reason,
      error: m.error ? { message: m.error.message, code: m.error.code, ...waits[m.id] } : null,
    })),
  });
  return read?.conversation ?? null;
}

export class ServerStore {
  persistent = true;
  remote = true; // asking goes through ask(); messages are the server's to write

  #local;
  #listeners = new Set();
  #pendingListeners = new Set();
  #waiting = 0; // writes waiting to be retried
  #wake = new Set(); // retries waiting for the next try
  #since = null; // the change feed's position
  #polling = false;
  #pollTimer = 0;
  #inPoll = null;
  #statuses = new Map(); // message id -> {conversationId, status, content} as last read

  /** `local`: this browser's store, for drafts and what could not be read. */
  constructor(local) {
    this.#local = local;
    window.addEventListener("online", () => this.#retryNow());
  }

  // ---- rate limits: how long to wait before retrying, kept in this browser --------------------

  // The server keeps a refused reply's code and message; the wait its 429 asked for is known only
  // to the page that got the answer. It is kept here (this browser's storage, by reply id, until
  // the wait is over), so Retry stays off for as long as asked, across a reload and in other tabs.

  get #waitsKey() {
    return `${this.#local.prefix}waits`;
  }

  /** {replyId: {message, requestId, retryAt}} of the waits not over yet. */
  #waits() {
    let waits = {};
    try {
      waits = JSON.parse(this.#local.storage.getItem(this.#waitsKey) || "{}") ?? {};
    } catch {
      // Unreadable: as if nothing waits.
    }
    const now = Date.now();
    return Object.fromEntries(Object.entries(waits).filter(([, wait]) => wait?.retryAt > now));
  }

  #keepWait(replyId, error) {
    const waits = { ...this.#waits(), [replyId]: { message: error.message, requestId: error.requestId, retryAt: error.retryAt } };
    try {
      this.#local.storage.setItem(this.#waitsKey, JSON.stringify(waits));
    } catch {
      // Full: the wait is shown until a reload.
    }
  }

  // ---- talking to the server -------------------------------------------------------------------

  /** One request; an answer that is not a 2xx rejects (ChatError, ConflictError, NotFoundError). */
  async #request(method, url, body, { persist = false, signal = null } = {}) {
    const response = await (persist ? this.#persist(() => this.#fetch(method, url, body, signal), signal) : this.#fetch(method, url, body, signal));
    if (response.ok) return response.status === 204 ? null : response.json();
    if (response.status === 404) throw new NotFoundError(url);
    const error = await errorFromResponse(response);
    if (response.status === 409 && error.code === "STALE") throw new ConflictError(await this.#revisionOf(url));
    throw error;
  }

  async #fetch(method, url, body, signal) {
    const init = { method, headers: { Accept: "application/json" }, signal };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      return await fetch(url, init);
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new ChatError("Could not reach the server.", { kind: "network" });
    }
  }

  /** A conflict's current revision (the 409 names it too; a read is simpler than parsing it). */
  async #revisionOf(url) {
    const conversation = await this.#request("GET", url.replace(/\/(restore|messages.*)$/, "")).catch(() => null);
    return conversation?.revision ?? 0;
  }

  /**
   * Try `attempt` (a fetch) until the server answers (anything but a gateway error), waiting
   * between tries; listeners hear that writes are waiting while they are.
   */
  async #persist(attempt, signal) {
    const waiting = this.#waitingMark();
    try {
      for (;;) {
        let response = null;
        try {
          response = await attempt();
        } catch (error) {
          if (!(error instanceof ChatError && error.kind === "network")) throw error;
        }
        if (response && !TRANSIENT.has(response.status)) return response;
        waiting.on();
        await this.#pause(signal);
      }
    } finally {
      waiting.off();
    }
  }

  /** One write's share of the "waiting" count: on while it waits to be retried, at most once. */
  #waitingMark() {
    let counted = false;
    return {
      on: () => {
        if (!counted) this.#setWaiting(this.#waiting + 1);
        counted = true;
      },
      off: () => {
        if (counted) this.#setWaiting(this.#waiting - 1);
        counted = false;
      },
    };
  }

  #pause(signal) {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake.delete(done);
        signal?.removeEventListener("abort", aborted);
        resolve();
      };
      const aborted = () => {
        done();
        reject(signal.reason ?? new DOMException("Aborted", "AbortError"));
      };
      const timer = setTimeout(done, RETRY_MS);
      this.#wake.add(done);
      if (signal?.aborted) aborted();
      else signal?.addEventListener("abort", aborted);
    });
  }

  #retryNow() {
    for (const wake of [...this.#wake]) wake();
  }

  #setWaiting(count) {
    this.#waiting = count;
    for (const listener of this.#pendingListeners) listener(count);
  }

  /** `callback(count)` whenever the number of writes waiting to reach the server changes. */
  onPending(callback) {
    this.#pendingListeners.add(callback);
    return () => this.#pendingListeners.delete(callback);
  }

  // ---- reading ---------------------------------------------------------------------------------

  async list({ after = null, limit = PAGE } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set("before", after);
    const page = await this.#request("GET", `/api/conversations?${query}`);
    // The change feed starts from the newest conversation of the first list (or from the start).
    if (!after) this.#since ??= page.items[0]?.updated_at ?? EPOCH;
    return { items: page.items.map(summaryFrom), next: page.next };
  }

  /** The server's best hits (one page: `next` is always null), a conversation once each. */
  async search(text, { after = null, limit = PAGE } = {}) {
    if (!text.trim()) return this.list({ after, limit });
    if (after) return { items: [], next: null };
    const { items } = await this.#request("GET", `/api/search?${new URLSearchParams({ q: text })}`);
    const seen = new Map();
    for (const hit of items) {
      // The first hit of a conversation is its newest message that has the words (or its title).
      if (!seen.has(hit.conversation_id)) {
        seen.set(hit.conversation_id, { id: hit.conversation_id, title: hit.title, updatedAt: time(hit.updated_at), messageId: hit.message_id ?? undefined });
      }
    }
    return { items: [...seen.values()].slice(0, limit), next: null };
  }

  async get(id) {
    let raw;
    try {
      raw = await this.#request("GET", `/api/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof NotFoundError) return null;
      throw error;
    }
    for (const m of raw.messages) this.#statuses.set(m.id, { conversationId: raw.id, status: m.status, content: m.content });
    return conversationFrom(raw, this.#waits());
  }

  problems() {
    return this.#local.problems();
  }

  // ---- writing ---------------------------------------------------------------------------------

  /**
   * A new conversation on the server, with `conversation`'s title and settings (its messages are
   * sent by ask()). Answers {id, revision, updatedAt}: the id is the server's.
   */
  async create(conversation) {
    const made = await this.#request(
      "POST",
      "/api/conversations",
      { title: conversation.title.trim().slice(0, 300) || "New chat", settings: settingsTo(conversation.settings), client_id: conversation.id },
      { persist: true },
    );
    this.#emit({ id: made.id, origin: "here", summary: summaryFrom(made) });
    return { id: made.id, revision: made.revision, updatedAt: time(made.updated_at) };
  }

  async update(id, fields, { revision }) {
    const body = { revision };
    if (typeof fields.title === "string" && fields.title.trim()) body.title = fields.title.trim().slice(0, 300);
    if (fields.settings) body.settings = settingsTo(fields.settings);
    if (fields.leafId) body.leaf_id = fields.leafId;
    const changed = await this.#request("PATCH", `/api/conversations/${encodeURIComponent(id)}`, body, { persist: true });
    this.#emit({ id, origin: "here", summary: summaryFrom(changed) });
    return { revision: changed.revision, updatedAt: time(changed.updated_at) };
  }

  /** The messages are the server's: only the title, settings and leaf are the caller's to set. */
  replace(conversation, { revision }) {
    return this.update(conversation.id, conversation, { revision });
  }

  appendMessage() {
    return Promise.reject(new TypeError("On the server, messages are sent with ask()"));
  }

  updateMessage() {
    return Promise.reject(new TypeError("On the server, replies are written by the server"));
  }

  /** Gone from the page at once; the server hears of it as soon as it can be reached. */
  async remove(id) {
    this.#emit({ id, origin: "here", removed: true });
    this.#request("DELETE", `/api/conversations/${encodeURIComponent(id)}`, undefined, { persist: true }).catch(() => this.#emit({ all: true, origin: "here" }));
  }

  /** Undo a removal (within the minutes before the server purges it). */
  async restore(conversation) {
    await this.#request("POST", `/api/conversations/${encodeURIComponent(conversation.id)}/restore`, {}, { persist: true });
    this.#emit({ all: true, origin: "here" });
  }

  async importAll(conversations) {
    const result = await this.#request("POST", "/api/import", { format: "quartchat", version: 1, conversations }, { persist: true });
    this.#emit({ all: true, origin: "here" });
    return { created: result.imported, skipped: result.skipped, full: false };
  }

  /**
   * One turn, saved and answered by the server: `turn` is {kind: "send", content, clientId,
   * parentId}, {kind: "edit", messageId, content, clientId} or {kind: "regenerate", messageId,
   * clientId}. Until the server has accepted it, a turn that cannot reach the server is retried
   * (with the same clientId, so it is made once); `onAccepted({messageId, replyId})` then names
   * its messages, `onDelta(text)` brings the reply, and it resolves with the `done` envelope
   * (rejects as api.js streamChat does).
   */
  async ask(conversationId, turn, { signal, onAccepted, onDelta }) {
    const base = `/api/conversations/${encodeURIComponent(conversationId)}/messages`;
    let url = base;
    let body = { content: turn.content, client_id: turn.clientId };
    if (turn.kind === "send" && turn.parentId) body.parent_id = turn.parentId;
    if (turn.kind === "edit") url = `${base}/${encodeURIComponent(turn.messageId)}/edit`;
    if (turn.kind === "regenerate") {
      url = `${base}/${encodeURIComponent(turn.messageId)}/regenerate`;
      body = { client_id: turn.clientId };
    }
    const waiting = this.#waitingMark();
    let accepted = false;
    let replyId = null;
    try {
      for (;;) {
        try {
          return await streamReply(url, body, {
            signal,
            onDelta,
            onResponse: (response) => {
              accepted = true;
              waiting.off();
              replyId = response.headers.get("Quartchat-Reply-Id");
              onAccepted({ messageId: response.headers.get("Quartchat-Message-Id"), replyId });
            },
          });
        } catch (error) {
          if (accepted && error.retryAt) this.#keepWait(replyId, error);
          // Once accepted, a failure is the reply's (the server keeps what it had). Before, a
          // turn that did not reach the service (no connection, or a gateway's error page rather
          // than the service's own error) is tried again.
          const unsent = !accepted && error instanceof ChatError && (error.kind === "network" || (TRANSIENT.has(error.status) && !error.code));
          if (!unsent) throw error;
          waiting.on();
          await this.#pause(signal);
        }
      }
    } finally {
      waiting.off();
    }
  }

  // ---- replies being written -----------------------------------------------------------------

  /** The server writes replies; there is nothing for a tab to hold. */
  async writing() {
    return () => {};
  }

  /** Those the server said (at the last read) it is still writing. */
  async beingWritten(messageIds) {
    return new Set(messageIds.filter((id) => this.#statuses.get(id)?.status === "streaming"));
  }

  /** Resolves once the server has finished writing it; meanwhile its text is followed. */
  async whenWritten(messageId) {
    for (;;) {
      const known = this.#statuses.get(messageId);
      if (!known || known.status !== "streaming") return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const before = known.content;
      const fresh = await this.get(known.conversationId).catch(() => undefined);
      if (fresh === null) return;
      if (this.#statuses.get(messageId)?.content !== before) this.#emit({ id: known.conversationId, origin: "elsewhere", content: true });
    }
  }

  // ---- this browser only ---------------------------------------------------------------------

  draft(id) {
    return this.#local.draft(id);
  }

  setDraft(id, text) {
    return this.#local.setDraft(id, text);
  }

  // ---- changes ---------------------------------------------------------------------------------

  subscribe(callback) {
    this.#listeners.add(callback);
    if (!this.#polling) {
      this.#polling = true;
      const soon = () => document.visibilityState === "visible" && this.poll();
      window.addEventListener("focus", soon);
      document.addEventListener("visibilitychange", soon);
      window.addEventListener("online", soon);
      this.#pollTimer = setTimeout(() => this.poll(), POLL_MS);
    }
    return () => this.#listeners.delete(callback);
  }

  /** Ask the change feed what changed since the last time (one poll at a time). */
  poll() {
    this.#inPoll ??= this.#pollOnce().finally(() => {
      this.#inPoll = null;
      clearTimeout(this.#pollTimer);
      this.#pollTimer = setTimeout(() => this.poll(), POLL_MS);
    });
    return this.#inPoll;
  }

  async #pollOnce() {
    try {
      if (this.#since === null) {
        const first = await this.#request("GET", "/api/conversations?limit=1");
        this.#since = first.items[0]?.updated_at ?? EPOCH;
        return;
      }
      const feed = await this.#request("GET", `/api/conversations/changes?${new URLSearchParams({ since: this.#since })}`);
      this.#since = feed.now;
      for (const item of feed.items) this.#emit({ id: item.id, origin: "elsewhere", summary: summaryFrom(item), content: true });
      for (const id of feed.deleted) this.#emit({ id, origin: "elsewhere", removed: true });
    } catch {
      // Offline, or logged out: the next poll tries again; writes say so themselves.
    }
  }

  #emit(change) {
    queueMicrotask(() => {
      for (const listener of this.#listeners) listener(change);
    });
  }
}

/**
 * The first time a user's page opens with the server store, the conversations this browser kept
 * for them (from before accounts, or before conversations moved to the server) are sent to the
 * server's import, which makes each once however often or from however many tabs it is sent.
 * They are then marked imported here (`<prefix>imported`), and stay in this browser's storage
 * untouched. Answers {imported, skipped}, or null when there was nothing to import.
 */
export async function importFromBrowser(local, remote, storage, prefix) {
  const key = `${prefix}imported`;
  let done;
  try {
    done = new Set(JSON.parse(storage.getItem(key) || "[]"));
  } catch {
    done = new Set();
  }
  const conversations = [];
  for (let after = null, page; (page = await local.list({ after, limit: 200 })); after = page.next) {
    for (const summary of page.items) {
      if (done.has(summary.id)) continue;
      const conversation = await local.get(summary.id);
      if (conversation?.messages.length) conversations.push(conversation);
    }
    if (!page.next) break;
  }
  if (!conversations.length) return null;
  const result = await remote.importAll(conversations);
  for (const conversation of conversations) done.add(conversation.id);
  try {
    storage.setItem(key, JSON.stringify([...done]));
  } catch {
    // Full: the next start sends them again, and the server skips them.
  }
  return { imported: result.created, skipped: result.skipped };
}
